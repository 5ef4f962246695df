"""Names are unique because the database says so, even under concurrent writes."""

from concurrent.futures import ThreadPoolExecutor

from .support import OPERATOR


def test_sequential_duplicate_hostname_is_refused(operator, server):
    assert operator.post("/machines", json={"hostname": "h1", "state": "idle"}).status_code == 201
    response = operator.post("/machines", json={"hostname": "h1", "state": "in_use"})
    assert response.status_code == 409
    assert response.json()["_status"] == "ERR"
    assert server.db.machines.count_documents({"hostname": "h1"}) == 1


def test_200_concurrent_posts_of_one_hostname_leave_exactly_one(server):
    def post(_):
        with server.session(OPERATOR) as session:
            response = session.post("/machines", json={"hostname": "contested", "state": "idle"})
            return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(post, range(200)))
    codes = [code for code, _ in results]
    assert codes.count(201) == 1, codes
    assert all(code == 409 for code in codes if code != 201), set(codes)
    assert all(body["_status"] == "ERR" for code, body in results if code != 201)
    assert server.db.machines.count_documents({"hostname": "contested"}) == 1


def test_renaming_onto_an_existing_hostname_is_refused(operator, server):
    operator.post("/machines", json={"hostname": "h1", "state": "idle"})
    operator.post("/machines", json={"hostname": "h2", "state": "idle"})
    response = operator.write("PATCH", "/machines/h2", json={"hostname": "h1"})
    assert response.status_code == 409
    assert response.json()["_error"]["message"].startswith("duplicate ")
    assert sorted(m["hostname"] for m in server.db.machines.find()) == ["h1", "h2"]


def test_replacing_onto_an_existing_address_is_refused_with_409(operator, server):
    operator.post("/private-addresses", json={"address": "10.0.0.1"})
    operator.post("/private-addresses", json={"address": "10.0.0.2", "owner": "kept"})
    response = operator.write("PUT", "/private-addresses/10.0.0.2", json={"address": "10.0.0.1"})
    assert response.status_code == 409
    assert server.db.private_addresses.find_one({"address": "10.0.0.2"})["owner"] == "kept"
    assert server.db.private_addresses.count_documents({}) == 2


def test_concurrent_renames_onto_one_name_leave_one_winner(operator, server):
    hosts = [f"h{i}" for i in range(20)]
    assert operator.post("/machines", json=[{"hostname": h, "state": "idle"} for h in hosts]).status_code == 201
    etags = {h: operator.get(f"/machines/{h}").json()["_etag"] for h in hosts}

    def rename(host):
        with server.session(OPERATOR) as session:
            return session.patch(f"/machines/{host}", json={"hostname": "target"},
                                 headers={"If-Match": etags[host]}).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(pool.map(rename, hosts))
    assert codes.count(200) == 1, codes
    assert set(codes) <= {200, 409}, codes
    assert server.db.machines.count_documents({"hostname": "target"}) == 1
    assert server.db.machines.count_documents({}) == 20


def test_the_former_sqlite_engine_answers_the_same_409s(tmp_path, users_file):
    from resource_manager.localdb import LocalDB

    from .support import LiveServer

    with LocalDB(str(tmp_path / "sqlite"), engine="sqlite") as db:
        live = LiveServer({"MONGO_URI": db.uri, "MONGO_DBNAME": "uniq", "USERS_FILE": users_file})
        try:
            api = live.session(OPERATOR)
            assert api.post("/machines", json={"hostname": "h1", "state": "idle"}).status_code == 201
            assert api.post("/machines", json={"hostname": "h2", "state": "idle"}).status_code == 201
            assert api.post("/machines", json={"hostname": "h1", "state": "idle"}).status_code == 409
            assert api.write("PATCH", "/machines/h2", json={"hostname": "h1"}).status_code == 409
        finally:
            live.stop()

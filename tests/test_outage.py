"""With the database away every endpoint answers 503; when it returns, the API recovers by itself."""


from resource_manager.localdb import LocalDB

from .support import OPERATOR, LiveServer, free_port


def test_outage_gives_503_then_recovers_without_restart(own_db, users_file):
    live = LiveServer({"MONGO_URI": own_db.uri, "MONGO_DBNAME": "outage", "USERS_FILE": users_file,
                       "MONGO_OPTIONS": {"connect": False, "tz_aware": True, "serverSelectionTimeoutMS": 2000,
                                         "connectTimeoutMS": 500}})
    try:
        api = live.session(OPERATOR)
        assert api.post("/machines", json={"hostname": "before", "state": "idle"}).status_code == 201

        own_db.stop()
        for method, path, body in [("GET", "/machines", None), ("GET", "/machines/before", None),
                                   ("POST", "/machines", {"hostname": "during", "state": "idle"}),
                                   ("GET", "/healthz", None)]:
            response = api.request(method, path, json=body)
            assert response.status_code == 503, (method, path, response.text)
            assert response.headers["Content-Type"].startswith("application/json")
        assert api.get("/healthz").json()["database"] == "down"
        assert api.get("/machines").json()["_error"]["code"] == 503

        own_db.start()
        assert api.get("/healthz").json()["database"] == "up"
        assert [m["hostname"] for m in api.get("/machines").json()["_items"]] == ["before"]
        assert api.post("/machines", json={"hostname": "after", "state": "idle"}).status_code == 201
    finally:
        live.stop()


def test_api_started_while_database_is_down_comes_up_when_it_does(tmp_path, users_file):
    port = free_port()
    live = LiveServer({"MONGO_URI": f"mongodb://127.0.0.1:{port}/", "MONGO_DBNAME": "late", "USERS_FILE": users_file,
                       "MONGO_OPTIONS": {"connect": False, "serverSelectionTimeoutMS": 2000, "connectTimeoutMS": 500}})
    db = LocalDB(str(tmp_path / "data"), port=port)
    try:
        api = live.session(OPERATOR)
        assert api.post("/machines", json={"hostname": "x", "state": "idle"}).status_code == 503
        db.start()
        assert api.post("/machines", json={"hostname": "x", "state": "idle"}).status_code == 201
        # The unique index was created late, and holds.
        assert api.post("/machines", json={"hostname": "x", "state": "idle"}).status_code == 409
    finally:
        live.stop()
        db.stop()

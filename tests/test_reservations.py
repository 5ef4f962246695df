"""Reservations over real HTTP: all or nothing, constraints, dry runs, release, leases, guards."""

import datetime
import json


def add_machines(session, *hostnames, state="idle", **fields):
    docs = [dict({"hostname": h, "state": state}, **fields) for h in hostnames]
    response = session.post("/machines", json=docs if len(docs) > 1 else docs[0])
    assert response.status_code == 201, response.text


def reserve(session, expect=201, headers=None, **body):
    response = session.post("/reservations", json=body, headers=headers or {})
    assert response.status_code == expect, response.text
    return response.json()


def test_reserve_takes_idle_machines_and_marks_them(operator, anon, server):
    add_machines(operator, "m1", "m2", "m3")
    old_etag = anon.get("/machines/m1").json()["_etag"]
    res = reserve(operator, count=2, owner="ci", job_id="build-42", reason="nightly")
    assert res["state"] == "active" and res["count"] == 2 and res["lease_seconds"] == 4 * 3600  # the default lease
    assert res["hostnames"] == ["m1", "m2"] and res["owner"] == "ci" and res["job_id"] == "build-42"
    for hostname in res["hostnames"]:
        machine = anon.get(f"/machines/{hostname}").json()
        assert (machine["state"], machine["owner"], machine["job_id"]) == ("in_use", "ci", "build-42")
        assert machine["reservation"] == res["_id"]
    assert anon.get("/machines/m3").json()["state"] == "idle"
    assert anon.get(f"/reservations/{res['_id']}").json() == res
    # The reservation gave the machine a new ETag: a client holding the old one is refused.
    stale = operator.patch("/machines/m1", json={"tags": {"x": 1}}, headers={"If-Match": old_etag})
    assert stale.status_code == 412


def test_shortfall_is_409_and_changes_nothing(operator, anon, server):
    add_machines(operator, "m1", "m2", "m3")
    add_machines(operator, "bad", state="needs_repair")
    before = anon.get("/machines").json()["_items"]
    body = reserve(operator, expect=409, count=4, owner="ci")
    assert body["_error"]["message"] == "requested 4, 3 available"
    assert anon.get("/machines").json()["_items"] == before
    assert server.db.reservations.count_documents({}) == 0
    assert server.db.machine_claims.count_documents({}) == 0


def test_unavailable_states_are_never_handed_out(operator):
    for i, state in enumerate(["needs_repair", "pxe_failed", "pxe", "in_use"]):
        add_machines(operator, f"m{i}", state=state)
    assert reserve(operator, expect=409, count=1)["_error"]["message"] == "requested 1, 0 available"


def test_where_constraints_on_tags_and_fields(operator):
    add_machines(operator, "small", tags={"memory": 8 << 30, "cpucores": 4})
    add_machines(operator, "big", tags={"memory": 32 << 30, "cpucores": 16, "gpu": "a100"})
    add_machines(operator, "huge", tags={"memory": 64 << 30, "cpucores": 8})
    where = {"tags.memory": {"$gte": 16 << 30}, "tags.cpucores": {"$gt": 8}}
    assert reserve(operator, count=1, where=where)["hostnames"] == ["big"]
    assert reserve(operator, count=1, where={"tags.gpu": {"$exists": False}, "hostname": {"$in": ["huge"]}}
                   )["hostnames"] == ["huge"]
    # Eve-style where as JSON text works too.
    assert reserve(operator, count=1, where='{"hostname": "small"}')["hostnames"] == ["small"]


UNSAFE_WHERE = [
    ({"hostname": {"$regex": "^m"}}, "$regex"),
    ({"$where": "sleep(1000)"}, "$where"),
    ({"$or": [{"hostname": "a"}]}, "$or"),
    ({"tags.memory": {"$gte": {"$function": 1}}}, "$gte"),
    ({"password": "x"}, "password"),
    ({"state": "in_use"}, "state"),
    ({"tags.$x": 1}, "tags.$x"),
    ("{not json", "JSON"),
]

INVALID = [
    ({"count": 0}, "count"), ({"count": -1}, "count"), ({"count": "2"}, "count"), ({"count": True}, "count"),
    ({"count": 10**6}, "count"), ({"lease_seconds": 0}, "lease_seconds"), ({"lease_seconds": 1.5}, "lease_seconds"),
    ({"owner": ""}, "owner"), ({"job_id": 7}, "job_id"), ({"colour": "red"}, "colour"),
]


def test_unsafe_where_is_422_naming_it(operator, server):
    add_machines(operator, "m1")
    for where, needle in UNSAFE_WHERE:
        body = reserve(operator, expect=422, count=1, where=where)
        assert needle in body["_issues"]["where"], where
    assert server.db.reservations.count_documents({}) == 0


def test_invalid_request_is_422_naming_the_field(operator, server):
    add_machines(operator, "m1")
    for body, field in INVALID:
        assert field in reserve(operator, expect=422, **body)["_issues"], body
    assert server.db.reservations.count_documents({}) == 0


def test_dry_run_answers_and_explains_without_changing_anything(operator, anon, server):
    add_machines(operator, "m1", "m2", tags={"memory": 8})
    add_machines(operator, "m3", state="needs_repair", tags={"memory": 64})
    response = operator.post("/reservations?dry_run=1", json={"count": 2})
    assert response.status_code == 200
    assert response.json()["would_reserve"] == ["m1", "m2"]
    body = operator.post("/reservations?dry_run=1", json={"count": 1, "where": {"tags.memory": {"$gte": 32}}}).json()
    assert body["would_reserve"] == [] and body["matching"] == 1 and body["idle"] == 0 and body["available"] == 0
    assert "1 machines match" in body["explanation"] and body["states"] == {"needs_repair": 1}
    assert server.db.reservations.count_documents({}) == 0
    assert {m["state"] for m in anon.get("/machines").json()["_items"]} == {"idle", "needs_repair"}


def test_owner_defaults_to_the_user_and_auth_is_required(operator, reader, anon):
    add_machines(operator, "m1")
    assert anon.post("/reservations", json={"count": 1}).status_code == 401
    assert reader.post("/reservations", json={"count": 1}).status_code == 403
    assert reserve(operator, count=1)["owner"] == "operator"


def test_idempotency_key_returns_the_same_reservation(operator, server):
    add_machines(operator, "m1", "m2", "m3")
    key = {"Idempotency-Key": "job-7-attempt"}
    first = reserve(operator, headers=key, count=1, job_id="j7")
    again = reserve(operator, headers=key, count=1, job_id="j7")
    assert again == first
    assert server.db.reservations.count_documents({}) == 1
    other = reserve(operator, expect=422, headers=key, count=2, job_id="j7")
    assert "different request" in other["_error"]["message"]
    # After a 409 the same key may be retried: nothing was kept under it.
    k2 = {"Idempotency-Key": "too-many"}
    reserve(operator, expect=409, headers=k2, count=5)
    assert reserve(operator, headers=k2, count=2)["hostnames"] == ["m2", "m3"]


def test_release_frees_machines_and_repeats_harmlessly(operator, anon, server):
    add_machines(operator, "m1", "m2")
    res = reserve(operator, count=2, owner="ci", job_id="b1")
    old_etag = anon.get("/machines/m1").json()["_etag"]
    response = operator.delete(f"/reservations/{res['_id']}")
    assert response.status_code == 200
    assert response.json() == {"released": ["m1", "m2"], "reservations": [res["_id"]], "state": "released"}
    machine = anon.get("/machines/m1").json()
    assert machine["state"] == "idle" and machine["owner"] is None and machine["job_id"] is None
    assert machine["_etag"] != old_etag
    assert anon.get(f"/reservations/{res['_id']}").json()["state"] == "released"
    assert server.db.machine_claims.count_documents({}) == 0
    again = operator.delete(f"/reservations/{res['_id']}")
    assert again.status_code == 200 and again.json()["released"] == []
    assert operator.delete("/reservations/nope").status_code == 404
    assert reserve(operator, count=2)["hostnames"] == ["m1", "m2"]


def test_release_by_job_id_frees_every_reservation_of_the_job(operator, anon):
    add_machines(operator, "m1", "m2", "m3")
    a = reserve(operator, count=1, job_id="j1")
    b = reserve(operator, count=1, job_id="j1")
    c = reserve(operator, count=1, job_id="j2")
    body = operator.delete("/reservations", params={"job_id": "j1"}).json()
    assert body["released"] == ["m1", "m2"] and sorted(body["reservations"]) == sorted([a["_id"], b["_id"]])
    assert anon.get(f"/reservations/{c['_id']}").json()["state"] == "active"
    assert operator.delete("/reservations").status_code == 400
    listed = anon.get("/reservations", params={"job_id": "j1", "state": "released"}).json()["_items"]
    assert sorted(r["_id"] for r in listed) == sorted([a["_id"], b["_id"]])
    assert [r["_id"] for r in anon.get("/reservations", params={"job_id": "j2"}).json()["_items"]] == [c["_id"]]


def test_reserved_machine_is_guarded_against_plain_writes(operator, anon):
    add_machines(operator, "m1")
    res = reserve(operator, count=1, owner="ci")
    for body in ({"state": "idle"}, {"owner": "eve"}, {"job_id": "other"}, {"hostname": "m9"}):
        response = operator.write("PATCH", "/machines/m1", json=body)
        assert response.status_code == 409, body
        assert res["_id"] in response.json()["_error"]["message"]
    assert operator.write("PUT", "/machines/m1", json={"hostname": "m1", "state": "idle"}).status_code == 409
    assert operator.write("DELETE", "/machines/m1").status_code == 409
    # Tags are not the reservation's business.
    assert operator.write("PATCH", "/machines/m1", json={"tags": {"rack": "r1"}}).status_code == 200
    put = operator.write("PUT", "/machines/m1", json={"hostname": "m1", "state": "in_use", "owner": "ci",
                                                       "job_id": None, "tags": {"rack": "r2"}})
    assert put.status_code == 200
    assert anon.get("/machines/m1").json()["reservation"] == res["_id"]
    operator.delete(f"/reservations/{res['_id']}")
    assert operator.write("PATCH", "/machines/m1", json={"state": "needs_repair"}).status_code == 200
    assert operator.write("DELETE", "/machines/m1").status_code == 204


def test_expired_lease_is_reclaimed_by_the_next_reservation(operator, anon, clock):
    add_machines(operator, "m1", "m2")
    old = reserve(operator, count=2, owner="a", lease_seconds=3600)
    assert old["expires"] is not None
    reserve(operator, expect=409, count=1)
    clock.advance(3601)
    new = reserve(operator, count=1, owner="b")
    assert new["hostnames"] == ["m1"]
    assert anon.get(f"/reservations/{old['_id']}").json()["state"] == "expired"
    assert anon.get("/machines/m2").json()["state"] == "idle"


SWEPT = {"expired": 0, "repaired": 0, "released": [], "pxe_failed": 0, "leases_given": 0}


def test_sweep_expires_leases(operator, reader, anon, clock):
    add_machines(operator, "m1", "m2")
    res = reserve(operator, count=1, lease_seconds=60)
    keep = reserve(operator, count=1, lease_seconds=3600)
    assert reader.post("/reservations/sweep").status_code == 403
    clock.advance(61)
    response = operator.post("/reservations/sweep")
    assert response.status_code == 200
    body = response.json()
    assert body == dict(SWEPT, expired=1, released=["m1"])
    assert anon.get(f"/reservations/{res['_id']}").json()["state"] == "expired"
    assert anon.get(f"/reservations/{keep['_id']}").json()["state"] == "active"
    assert operator.post("/reservations/sweep?grace=0").status_code == 403


def test_extend_moves_the_lease_forward(operator, anon, clock):
    add_machines(operator, "m1", "m2")
    res = reserve(operator, count=1, lease_seconds=60)
    extended = operator.post(f"/reservations/{res['_id']}/extend", json={"lease_seconds": 7200})
    assert extended.status_code == 200
    assert extended.json()["expires"] > res["expires"]
    # Extending never shortens.
    same = operator.post(f"/reservations/{res['_id']}/extend", json={"lease_seconds": 10}).json()
    assert same["expires"] == extended.json()["expires"]
    bad = operator.post(f"/reservations/{res['_id']}/extend", json={"lease_seconds": -5})
    assert bad.status_code == 422 and "lease_seconds" in bad.json()["_issues"]
    clock.advance(7201)
    late = operator.post(f"/reservations/{res['_id']}/extend", json={"lease_seconds": 60})
    assert late.status_code == 409 and "lease expired" in late.json()["_error"]["message"]
    assert operator.post("/reservations/nope/extend", json={"lease_seconds": 5}).status_code == 404


def test_rm_sweep_console_command(operator, anon, server, clock, localdb, dbname, users_file, monkeypatch, capsys):
    from resource_manager.admin import sweep

    add_machines(operator, "m1")
    res = reserve(operator, count=1, lease_seconds=60)
    # rm-sweep runs on the real clock: the lease ran out a minute ago, as stored.
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=60)
    server.db.reservations.update_one({"_id": res["_id"]}, {"$set": {"expires": past, "ends_at": past}})
    monkeypatch.setenv("MONGO_URI", localdb.uri)
    monkeypatch.setenv("RM_MONGO_DBNAME", dbname)
    monkeypatch.setenv("RM_USERS_FILE", users_file)
    assert sweep.main([]) == 0
    assert json.loads(capsys.readouterr().out) == dict(SWEPT, expired=1, released=["m1"])
    assert anon.get("/machines/m1").json()["state"] == "idle"
    monkeypatch.delenv("MONGO_URI")
    assert sweep.main([]) == 2


def test_one_pass_over_the_idle_machines_serves_many_reservations_and_misses_none(operator, server):
    # 150 machines: more than two batches of candidates (64), handed out one reservation at a time.
    add_machines(operator, *[f"p{i:03d}" for i in range(150)])
    taken = [reserve(operator, count=1, job_id=f"j{i}")["hostnames"][0] for i in range(150)]
    assert len(set(taken)) == 150
    body = reserve(operator, expect=409, count=1)
    assert body["_error"]["message"] == "requested 1, 0 available"
    # Freed while the pass is young: a reservation that runs dry starts a pass afresh and finds them.
    assert operator.delete("/reservations", params={"job_id": "j7"}).status_code == 200
    assert operator.delete("/reservations", params={"job_id": "j99"}).status_code == 200
    assert sorted(reserve(operator, count=2)["hostnames"]) == sorted([taken[7], taken[99]])
    assert server.db.machines.count_documents({"state": "idle"}) == 0

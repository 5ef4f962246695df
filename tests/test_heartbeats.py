"""Every reservation ends by itself: the default lease, the maximum, heartbeats, extending any active one.

The server runs on a ManualClock without its upkeep ticker (the `clock` fixture): time moves when
the test says, and the sweep ends what ran out, as the ticker would. The ticker itself, across
gunicorn processes and on the real clock, is proven by tests/test_run_deployed.py.
"""

import datetime

import pytest

from .test_reservations import add_machines, reserve

HOUR = 3600


def stored(server, rid):
    return server.db.reservations.find_one({"_id": rid})


def seconds(delta):
    return delta.total_seconds()


def sweep(operator):
    response = operator.post("/reservations/sweep")
    assert response.status_code == 200, response.text
    return response.json()


def test_a_reservation_made_without_a_lease_gets_the_default_and_ends_by_itself(operator, server, clock):
    add_machines(operator, "m1")
    res = reserve(operator, count=1)
    assert res["lease_seconds"] == 4 * HOUR and res["expires"] is not None
    assert seconds(stored(server, res["_id"])["expires"] - clock.now()) == 4 * HOUR
    clock.advance(4 * HOUR - 1)
    assert sweep(operator)["expired"] == 0
    clock.advance(2)
    assert sweep(operator) == {"expired": 1, "repaired": 0, "released": ["m1"], "pxe_failed": 0, "leases_given": 0}
    ended = stored(server, res["_id"])
    assert (ended["state"], ended["end_reason"]) == ("expired", "lease expired")


def test_a_reservation_stored_without_a_lease_can_be_extended(operator, server, clock):
    """As an earlier version stored it: no expiry. Extending it was a 409 ("has no lease to extend")."""
    add_machines(operator, "m1", "m2")
    old = reserve(operator, count=1)
    server.db.reservations.update_one({"_id": old["_id"]}, {"$set": {"expires": None}, "$unset": {"ends_at": ""}})
    extended = operator.post(f"/reservations/{old['_id']}/extend", json={"lease_seconds": 2 * HOUR})
    assert extended.status_code == 200, extended.text
    assert seconds(stored(server, old["_id"])["expires"] - clock.now()) == 2 * HOUR
    # Given only a heartbeat, it gets the default lease as well.
    other = reserve(operator, count=1)
    server.db.reservations.update_one({"_id": other["_id"]}, {"$set": {"expires": None}})
    beating = operator.post(f"/reservations/{other['_id']}/extend", json={"heartbeat_seconds": 60})
    assert beating.status_code == 200 and beating.json()["heartbeat_seconds"] == 60
    assert seconds(stored(server, other["_id"])["expires"] - clock.now()) == 4 * HOUR


def test_the_sweep_gives_reservations_stored_without_a_lease_the_default_from_then(operator, anon, server, clock):
    add_machines(operator, "m1")
    old = reserve(operator, count=1, job_id="legacy")
    server.db.reservations.update_one({"_id": old["_id"]}, {"$set": {"expires": None}, "$unset": {"ends_at": ""}})
    clock.advance(10 * HOUR)  # however old it is, its lease counts from the sweep
    assert sweep(operator)["leases_given"] == 1
    given = stored(server, old["_id"])
    assert seconds(given["expires"] - clock.now()) == 4 * HOUR and given["state"] == "active"
    last = anon.get(f"/reservations/{old['_id']}/history").json()["_items"][-1]
    assert last["action"] == "extended"
    assert last["reason"].startswith("given the default lease of 14400 s: stored without an expiry")
    assert sweep(operator)["leases_given"] == 0


def test_leases_stop_at_the_maximum(operator, server, clock):
    add_machines(operator, "m1")
    too_long = operator.post("/reservations", json={"count": 1, "lease_seconds": 7 * 86400 + 1})
    assert too_long.status_code == 422 and "lease_seconds" in too_long.json()["_issues"]
    res = reserve(operator, count=1, lease_seconds=7 * 86400)
    clock.advance(3 * 86400)
    extended = operator.post(f"/reservations/{res['_id']}/extend", json={"lease_seconds": 7 * 86400})
    assert extended.status_code == 200
    assert seconds(stored(server, res["_id"])["expires"] - clock.now()) == 7 * 86400
    refused = operator.post(f"/reservations/{res['_id']}/extend", json={"lease_seconds": 7 * 86400 + 1})
    assert refused.status_code == 422 and "lease_seconds" in refused.json()["_issues"]


def test_a_missed_heartbeat_ends_the_reservation_and_says_so(operator, anon, server, clock):
    add_machines(operator, "m1")
    res = reserve(operator, count=1, heartbeat_seconds=60, job_id="ci")
    granted = stored(server, res["_id"])
    assert res["heartbeat_seconds"] == 60 and seconds(granted["heartbeat_due"] - granted["granted_at"]) == 60
    clock.advance(59)
    beat = operator.post(f"/reservations/{res['_id']}/heartbeat")
    assert beat.status_code == 200 and beat.json()["state"] == "active"
    assert seconds(stored(server, res["_id"])["heartbeat_due"] - clock.now()) == 60
    clock.advance(59)
    assert sweep(operator)["expired"] == 0  # the beat moved the window
    clock.advance(2)
    assert sweep(operator)["released"] == ["m1"]
    ended = stored(server, res["_id"])
    assert ended["state"] == "expired"
    assert ended["end_reason"].startswith("no heartbeat for 60 s (heartbeat_seconds=60; last at ")
    last = anon.get(f"/reservations/{res['_id']}/history").json()["_items"][-1]
    assert last["action"] == "expired" and last["reason"] == ended["end_reason"]
    late = operator.post(f"/reservations/{res['_id']}/heartbeat")
    assert late.status_code == 409
    assert late.json()["_error"]["state"] == "expired"
    assert late.json()["_error"]["message"].startswith(f"reservation {res['_id']} has ended: expired (no heartbeat")
    assert operator.post("/reservations/nope/heartbeat").status_code == 404
    assert anon.post(f"/reservations/{res['_id']}/heartbeat").status_code == 401


def test_a_queued_request_has_no_heartbeat_due_until_its_grant(operator, server, clock):
    add_machines(operator, "m1")
    holder = reserve(operator, count=1)
    queued = reserve(operator, expect=202, count=1, heartbeat_seconds=30, wait_seconds=3600)
    beat = operator.post(f"/reservations/{queued['_id']}/heartbeat")
    assert beat.status_code == 200 and beat.json()["state"] == "queued" and beat.json()["heartbeat_due"] is None
    clock.advance(600)  # long past its heartbeat period: nothing is due while it waits
    sweep(operator)
    assert stored(server, queued["_id"])["state"] == "queued"
    assert operator.delete(f"/reservations/{holder['_id']}").json() == {
        "released": ["m1"], "reservations": [holder["_id"]], "state": "released"}
    granted = stored(server, queued["_id"])
    assert granted["state"] == "active" and granted["heartbeat_due"] == clock.now() + datetime.timedelta(seconds=30)


def test_extend_renews_the_heartbeat_changes_or_stops_it_and_says_why(operator, anon, server, clock):
    add_machines(operator, "m1")
    res = reserve(operator, count=1, heartbeat_seconds=60, lease_seconds=8 * HOUR)
    path = f"/reservations/{res['_id']}/extend"
    clock.advance(50)
    assert operator.post(path, json={"lease_seconds": HOUR}).status_code == 200  # renews the heartbeat too
    assert seconds(stored(server, res["_id"])["heartbeat_due"] - clock.now()) == 60
    assert seconds(stored(server, res["_id"])["expires"] - clock.now()) == 8 * HOUR - 50  # never shortened
    exact = operator.post(path, json={"lease_seconds": HOUR, "exact": True, "heartbeat_seconds": None,
                                      "reason": "kept for post-mortem: make check exited 2"})
    assert exact.status_code == 200
    body = exact.json()
    assert body["heartbeat_seconds"] is None and body["heartbeat_due"] is None
    assert seconds(stored(server, res["_id"])["expires"] - clock.now()) == HOUR  # exactly, shorter
    last = anon.get(f"/reservations/{res['_id']}/history").json()["_items"][-1]
    assert (last["action"], last["reason"]) == ("extended", "kept for post-mortem: make check exited 2")
    assert last["changes"]["heartbeat_seconds"] == {"before": 60, "after": None}
    clock.advance(HOUR - 1)
    assert sweep(operator)["expired"] == 0  # no heartbeat expected any more
    clock.advance(2)
    assert sweep(operator)["expired"] == 1 and stored(server, res["_id"])["end_reason"] == "lease expired"


@pytest.mark.parametrize("period", [4, 86401, "60", True])
def test_a_heartbeat_period_out_of_bounds_is_refused(operator, server, period):
    add_machines(operator, "m1")
    made = operator.post("/reservations", json={"count": 1, "heartbeat_seconds": period})
    assert made.status_code == 422 and "heartbeat_seconds" in made.json()["_issues"]
    res = reserve(operator, count=1)
    extended = operator.post(f"/reservations/{res['_id']}/extend", json={"heartbeat_seconds": period})
    assert extended.status_code == 422 and "heartbeat_seconds" in extended.json()["_issues"]
    assert server.db.reservations.count_documents({}) == 1
    assert stored(server, res["_id"])["heartbeat_seconds"] is None


def test_heartbeats_racing_a_release_and_an_extension_never_bring_it_back(operator, server):
    # Each round: two heartbeats, an extension and the release, released together by a barrier; then
    # the database: the reservation released, its machines idle and free, nothing rm-check would report.
    from resource_manager.core import check

    from .support import run_together

    add_machines(operator, "r1", "r2")
    for _round in range(12):
        rid = reserve(operator, count=2, heartbeat_seconds=60, lease_seconds=HOUR)["_id"]
        calls = [("POST", f"/reservations/{rid}/heartbeat", None), ("POST", f"/reservations/{rid}/heartbeat", None),
                 ("POST", f"/reservations/{rid}/extend", {"lease_seconds": 2 * HOUR}),
                 ("DELETE", f"/reservations/{rid}", None)]
        def call(i, calls=calls):
            method, path, body = calls[i]
            return operator.request(method, path, json=body).status_code

        statuses = run_together(len(calls), call)
        assert statuses[3] == 200 and all(s in (200, 409) for s in statuses[:3]), statuses
        res = stored(server, rid)
        assert res["state"] == "released", res
        machines = list(server.db.machines.find({}, {"state": 1, "reservation": 1}))
        assert all(m["state"] == "idle" and not m.get("reservation") for m in machines), machines
        assert server.db.machine_claims.count_documents({}) == 0
        assert check.check(server.db) == []

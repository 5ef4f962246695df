"""GET /events on one server: event types and data, resuming with Last-Event-ID, retention, limits."""

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resource_manager.api.db import database
from resource_manager.core import events, history
from resource_manager.core.clock import utcnow
from resource_manager.core.context import NOBODY

from .sse import Stream
from .support import PASSWORDS, LiveServer, run_together


def core_db(server):
    with server.app.app_context():
        return database(server.app)


def test_machine_changes_arrive_in_order_with_before_and_after(server, operator):
    with Stream(server.url) as stream:
        assert operator.post("/machines", json={"hostname": "m1", "state": "idle"}).status_code == 201
        etag = operator.get("/machines/m1").json()["_etag"]
        assert operator.patch("/machines/m1", json={"state": "needs_repair"},
                              headers={"If-Match": etag, "X-Reason": "fan"}).status_code == 200
        assert operator.write("DELETE", "/machines/m1").status_code == 204
        got = stream.wait_for(3)
    assert [(kind, data["hostname"]) for _id, kind, data in got] == [
        ("machine.created", "m1"), ("machine.updated", "m1"), ("machine.deleted", "m1")]
    ids = [i for i, _kind, _data in got]
    assert ids == sorted(ids) and len(set(ids)) == 3
    updated = got[1][2]
    assert updated["changes"] == {"state": {"before": "idle", "after": "needs_repair"}}
    assert updated["user"] == "operator" and updated["reason"] == "fan" and updated["action"] == "update"
    assert updated["_id"] == str(server.db.history.find_one({"action": "create"})["item_id"])
    assert got[2][2]["changes"]["state"] == {"before": "needs_repair", "after": None}


def test_a_reconnect_with_last_event_id_gets_what_it_missed_once(server, operator):
    with Stream(server.url) as first:
        operator.post("/machines", json=[{"hostname": f"a{i}", "state": "idle"} for i in range(3)])
        seen = first.wait_for(3)
    last = first.last_id
    assert last == seen[-1][0]
    operator.post("/machines", json={"hostname": "b1", "state": "idle"})
    operator.write("PATCH", "/machines/b1", json={"owner": "x"})
    with Stream(server.url, last_event_id=last) as second:
        got = second.wait_for(2)
        assert second.wait_for(3, timeout=0.5) == got  # and nothing more
    assert [(k, d["hostname"]) for _i, k, d in got] == [("machine.created", "b1"), ("machine.updated", "b1")]
    assert [i for i, _k, _d in seen + got] == list(range(seen[0][0], seen[0][0] + 5))
    # The same through ?last_event_id= (clients that cannot set headers).
    with Stream(server.url, params={"last_event_id": last}) as third:
        assert [i for i, _k, _d in third.wait_for(2)] == [i for i, _k, _d in got]


def test_a_stream_without_last_event_id_starts_now(server, operator):
    operator.post("/machines", json={"hostname": "old", "state": "idle"})
    with Stream(server.url) as stream:
        operator.post("/machines", json={"hostname": "new", "state": "idle"})
        got = stream.wait_for(1)
        assert stream.wait_for(2, timeout=0.5) == got
    assert [d["hostname"] for _i, _k, d in got] == ["new"]


def test_types_filter_and_the_resume_point_moves_past_what_was_filtered(server, operator):
    with Stream(server.url, params={"types": "machine.updated,reservation.*"}) as stream:
        operator.post("/machines", json={"hostname": "m1", "state": "idle"})
        operator.write("PATCH", "/machines/m1", json={"owner": "o"})
        operator.post("/machines", json={"hostname": "m2", "state": "idle"})
        got = stream.wait_for(1)
        stream.wait_until(lambda _e: stream.last_id == got[0][0] + 1)
    assert [k for _i, k, _d in got] == ["machine.updated"]
    assert stream.last_id == got[0][0] + 1  # the filtered machine.created of m2 moved it on


def test_address_and_reservation_events(server, operator):
    operator.post("/machines", json={"hostname": "m1", "state": "idle"})
    pool = {"name": "p", "cidr": "10.9.0.0/30", "kind": "private"}
    assert operator.post("/address-pools", json=pool).status_code == 201
    with Stream(server.url, params={"types": "address.*,reservation.*"}) as stream:
        addr = operator.post("/address-pools/p/allocate", json={"count": 1}).json()["addresses"][0]
        assert operator.write("DELETE", f"/private-addresses/{addr}").status_code == 204
        held = operator.post("/reservations", json={"count": 1}).json()
        queued = operator.post("/reservations", json={"count": 1, "wait_seconds": 60})
        assert queued.status_code == 202
        assert operator.delete(f"/reservations/{held['_id']}").status_code == 200
        rid = queued.json()["_id"]
        got = stream.wait_until(lambda e: any(k == "reservation.granted" and d["_id"] == rid for _i, k, d in e))
    kinds = [k for _i, k, _d in got]
    assert kinds[:2] == ["address.allocated", "address.released"]
    assert got[0][2]["address"] == addr and got[0][2]["kind"] == "private"
    # The held one was granted at once; the waiting one queued, then granted when the held one was released.
    mine = [(k, d["state"]) for _i, k, d in got if k.startswith("reservation.") and d["_id"] == rid]
    assert mine == [("reservation.queued", "queued"), ("reservation.granted", "active")]
    assert [k for _i, k, d in got if d.get("_id") == held["_id"]] == ["reservation.granted", "reservation.released"]


def test_events_older_than_retention_are_reported_lost(server, operator):
    db = core_db(server)
    with Stream(server.url, last_event_id=0) as watching:  # the process's feed holds them in its ring too
        operator.post("/machines", json=[{"hostname": f"m{i}", "state": "idle"} for i in range(events.PAGE + 5)])
        watching.wait_for(events.PAGE + 5)
    later = utcnow() + datetime.timedelta(seconds=10)
    assert events.prune(db, later, 0) == events.PAGE - 1  # page 0 (ids 1-63); never the newest page
    assert events.floor(db) == events.PAGE
    with Stream(server.url, last_event_id=3) as stream:
        got = stream.wait_for(1)
    assert got[0][1] == "events.lost"
    assert got[0][2] == {"last_event_id": 3, "oldest_kept": events.PAGE, "resumes_after": events.top(db)}
    with Stream(server.url, last_event_id=events.PAGE - 1) as stream:  # just below the floor: nothing lost
        got = stream.wait_for(6)
    assert [i for i, _k, _d in got] == list(range(events.PAGE, events.PAGE + 6))


def test_bad_requests_are_400_and_change_nothing(anon):
    for headers, params in (({"Last-Event-ID": "x"}, None), ({"Last-Event-ID": "-3"}, None),
                            ({}, {"types": "machine"}), ({}, {"types": ","})):
        response = anon.get("/events", headers=headers, params=params)
        assert response.status_code == 400, (headers, params)
        assert response.json()["_status"] == "ERR" and response.json()["_error"]["code"] == 400


@pytest.fixture
def limited(overrides):
    live = LiveServer(dict(overrides, LONG_REQUEST_SLOTS=1, EVENTS_STREAM_SECONDS=1.5, EVENTS_AUTH="reader"))
    yield live
    live.stop()


def test_streams_take_a_slot_end_by_themselves_and_may_need_a_role(limited):
    reader = ("reader", PASSWORDS["reader"])
    assert limited.session().get("/events").status_code == 401
    with Stream(limited.url, auth=reader) as first:
        assert first.response.status_code == 200
        busy = limited.session(reader).get("/events")
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "5"
        assert "LONG_REQUEST_SLOTS" in busy.json()["_error"]["message"]
        assert limited.session().get("/healthz").status_code == 200
        assert first.ended.wait(10)  # after EVENTS_STREAM_SECONDS
    with Stream(limited.url, auth=reader) as second:  # the slot was given back
        assert second.response.status_code == 200


def test_ids_are_contiguous_and_each_entry_numbered_once_under_concurrent_writers(server):
    db = core_db(server)

    def write(i, run):
        for j in range(10):
            doc = {"_id": f"{run}-{i}-{j}", "hostname": f"h{i}-{j}"}
            at = utcnow()
            entries = [history.entry("machines", doc, "update", {"n": {"before": j, "after": j + 1}}, NOBODY, at)]
            if j % 3 == 0:
                entries.append(history.entry("machines", doc, "update", {"n": {"before": j + 1, "after": j}}, NOBODY,
                                             at))
            history.record_many(db, entries)

    for run in range(3):
        run_together(8, lambda i, run=run: write(i, run))
    stored = sorted(d["_id"] for d in server.db.events.find({}, {"_id": 1}))
    assert stored == list(range(1, len(stored) + 1))
    assert len(stored) == 3 * 8 * (10 + 4) == server.db.history.count_documents({})
    assert events.top(db) == len(stored)
    # A batch's entries keep their order, next to each other.
    pairs = {}
    for doc in server.db.events.find():
        pairs.setdefault(doc["item_id"], []).append(doc["_id"])
    for ids in pairs.values():
        ids.sort()
        assert len(ids) in (1, 2) and (len(ids) == 1 or ids[1] == ids[0] + 1)


def test_a_writer_that_died_before_raising_the_top_mark_holds_nobody_up(server, operator):
    db = core_db(server)
    history.record(db, "machines", {"_id": "x", "hostname": "x"}, "create", {"state": {"before": None,
                                                                                         "after": "idle"}},
                   at=utcnow())
    server.db.event_marks.delete_many({})  # as if no mark was ever raised
    with Stream(server.url, last_event_id=0) as stream:
        operator.post("/machines", json={"hostname": "m1", "state": "idle"})
        got = stream.wait_for(2)
    assert [i for i, _k, _d in got] == [1, 2] and events.top(db) == 2


ACTIONS = st.sampled_from(["create", "update", "delete", "reserve", "release", "expire", "allocate", "queued",
                           "granted", "extended", "released", "cancelled", "timed_out", "pxe_timeout"])
OWNERS = st.one_of(st.none(), st.text(min_size=1, max_size=3))


@settings(max_examples=50, deadline=None)
@given(resource=st.sampled_from(["machines", "public-addresses", "private-addresses", "reservations"]),
       action=ACTIONS, before=OWNERS, after=OWNERS)
def test_every_history_entry_maps_to_one_documented_type(resource, action, before, after):
    doc = {"resource": resource, "action": action, "name": "n", "item_id": "i",
           "changes": {"owner": {"before": before, "after": after}}}
    kind = events.event_type(doc)
    noun, verb = kind.split(".")
    if resource == "machines":
        assert kind == {"create": "machine.created", "delete": "machine.deleted"}.get(action, "machine.updated")
    elif resource == "reservations":
        assert kind == f"reservation.{action}"  # a new action flows through as it is
    else:
        assert noun == "address"
        if action in ("allocate", "release"):
            assert verb == action + "d"
        elif after and not before:
            assert verb == "allocated"
        elif before and not after:
            assert verb == "released"
        else:
            assert verb == {"create": "created", "update": "updated", "delete": "deleted"}.get(action, action)
    data = events.event_data(doc)
    assert data["_id"] == "i" and data["action"] == action


def test_a_second_server_on_the_same_database_serves_the_same_stream(server, operator, overrides):
    other = LiveServer(dict(overrides, MONGO_DBNAME=server.app.config["MONGO_DBNAME"], EVENTS_AUTH="open",
                            EVENTS_STREAM_SECONDS=30))
    try:
        with Stream(other.url, last_event_id=0) as stream:
            operator.post("/machines", json={"hostname": "m1", "state": "idle"})
            got = stream.wait_for(1)
        assert got[0][:2] == (1, "machine.created")
    finally:
        other.stop()

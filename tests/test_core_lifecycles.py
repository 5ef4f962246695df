"""The fast tier: core's lifecycles against the real embedded database, no HTTP, time moved by a ManualClock.

Leases, heartbeats, waits and aging are tested by moving the clock, never by sleeping; the HTTP tests
keep the end-to-end proofs.
"""

import datetime

import pymongo
import pytest

from resource_manager.core import atomic, ending, queue, reserving, sweep
from resource_manager.core.candidates import CandidatePasses
from resource_manager.core.context import Actor, Core, Policy
from resource_manager.core.errors import AllocationError, Impossible, Shortfall

from .support import seed_machines


@pytest.fixture
def raw_db(localdb, dbname):
    client = pymongo.MongoClient(localdb.uri, tz_aware=True)
    db = client[dbname]
    db.machines.create_index("hostname", unique=True)
    yield db
    client.drop_database(dbname)
    client.close()


@pytest.fixture
def core(raw_db, clock):
    """Core over the real database (its writes atomic as the service makes them), on a clock that moves when told."""
    return Core(atomic.detect(raw_db).wrap(raw_db), clock, Policy(), CandidatePasses(clock))


def request(count=1, **fields):
    return dict({"count": count, "owner": "ci", "job_id": "j", "where": {}, "lease_seconds": None,
                 "heartbeat_seconds": None, "reason": None, "priority": 50}, **fields)


def reserve(core, count=1, user="ci", wait=0, **fields):
    return reserving.reserve(core, request(count, **fields), user, wait_seconds=wait)[0]


def test_a_reservation_without_a_lease_gets_the_default_and_ends_by_itself(core, raw_db, clock):
    seed_machines(raw_db, 2)
    res = reserve(core)
    assert res["lease_seconds"] == 4 * 3600 and res["expires"] == res["granted_at"] + datetime.timedelta(hours=4)
    clock.advance(4 * 3600 - 1)
    assert ending.expire_due(core) == (0, [])
    clock.advance(2)
    count, freed = ending.expire_due(core)
    assert count == 1 and freed == res["hostnames"]
    stored = raw_db.reservations.find_one({"_id": res["_id"]})
    assert (stored["state"], stored["end_reason"]) == ("expired", "lease expired")


def test_a_missed_heartbeat_ends_the_reservation_and_a_beat_keeps_it(core, raw_db, clock):
    seed_machines(raw_db, 1)
    res = reserve(core, heartbeat_seconds=30, lease_seconds=3600)
    for _ in range(5):
        clock.advance(29)
        assert ending.expire_due(core)[0] == 0
        ending.heartbeat(core, res["_id"])
    clock.advance(31)
    assert ending.expire_due(core)[0] == 1
    stored = raw_db.reservations.find_one({"_id": res["_id"]})
    assert stored["end_reason"].startswith("no heartbeat for 30 s")
    with pytest.raises(AllocationError) as ended:
        ending.heartbeat(core, res["_id"])
    assert ended.value.status == 409 and "has ended: expired (no heartbeat for 30 s" in ended.value.message


def test_a_queued_request_has_no_heartbeat_due_until_its_grant(core, raw_db, clock):
    seed_machines(raw_db, 1)
    held = reserve(core, lease_seconds=600)
    waiting = reserve(core, wait=3600, heartbeat_seconds=30, lease_seconds=600)
    assert waiting["state"] == "queued"
    clock.advance(300)  # longer than its heartbeat period: nothing is due while it waits
    assert ending.heartbeat(core, waiting["_id"])["state"] == "queued"
    ending.release_or_cancel(core, held["_id"], Actor("ci"))
    assert queue.serve(core)["granted"] == [waiting["_id"]]
    granted = raw_db.reservations.find_one({"_id": waiting["_id"]})
    assert granted["heartbeat_due"] == granted["granted_at"] + datetime.timedelta(seconds=30)


def test_a_wait_runs_out_when_the_clock_says(core, raw_db, clock):
    seed_machines(raw_db, 1)
    reserve(core)
    waiting = reserve(core, wait=60)
    clock.advance(59)
    assert queue.serve(core)["timed_out"] == []
    clock.advance(2)
    assert queue.serve(core)["timed_out"] == [waiting["_id"]]


def test_aging_lifts_a_low_priority_over_later_arrivals(core, raw_db, clock):
    seed_machines(raw_db, 1)
    held = reserve(core, lease_seconds=600)
    low = reserve(core, wait=86400, priority=10)
    clock.advance(60 * 50)  # 50 points of aging at one a minute: 10 + 50 = 60
    high = reserve(core, wait=86400, priority=55)
    assert [r["_id"] for r in queue.waiting(core)] == [low["_id"], high["_id"]]
    ending.release_or_cancel(core, held["_id"], Actor("ci"))
    assert queue.serve(core)["granted"] == [low["_id"]]


def test_more_than_ever_matches_is_refused_at_once(core, raw_db):
    seed_machines(raw_db, 3)
    with pytest.raises(Impossible) as refused:
        reserve(core, count=4, wait=600)
    assert refused.value.status == 409 and raw_db.reservations.count_documents({}) == 0
    reserve(core, count=3)
    with pytest.raises(Shortfall):
        reserve(core, count=1)


def test_an_ending_cut_off_half_way_is_finished_by_retrying_the_release(core, raw_db):
    seed_machines(raw_db, 1)
    res = reserve(core)
    # As a release killed after its first step leaves it: marked ending, machine still in use.
    assert ending.begin_ending(core, res, "released", Actor("ci"))
    assert raw_db.machines.find_one()["state"] == "in_use"
    outcome = ending.release_or_cancel(core, res["_id"], Actor("ci"))
    assert (outcome.state, outcome.released) == ("released", res["hostnames"])
    assert raw_db.machines.find_one()["state"] == "idle" and raw_db.machine_claims.count_documents({}) == 0


def test_reservations_stored_without_a_lease_get_the_default_at_the_next_sweep(core, raw_db, clock):
    seed_machines(raw_db, 1)
    res = reserve(core)
    raw_db.reservations.update_one({"_id": res["_id"]}, {"$set": {"expires": None}, "$unset": {"ends_at": ""}})
    clock.advance(86400)  # stored like that a day ago: the lease counts from the sweep
    swept = sweep.sweep(core)
    assert swept["leases_given"] == 1 and swept["expired"] == 0
    stored = raw_db.reservations.find_one({"_id": res["_id"]})
    assert stored["expires"] == clock.now() + datetime.timedelta(hours=4) == stored["ends_at"]


def test_extend_exact_shortens_and_is_capped_by_the_maximum(core, raw_db, clock):
    seed_machines(raw_db, 1)
    res = reserve(core, lease_seconds=3600)
    kept = ending.extend(core, res["_id"], 600, Actor("ci", "post-mortem"), heartbeat_seconds=None, exact=True)
    assert kept["expires"] == clock.now() + datetime.timedelta(seconds=600)
    longest = ending.extend(core, res["_id"], 10**7, Actor("ci"))
    assert longest["expires"] == clock.now() + datetime.timedelta(days=7)

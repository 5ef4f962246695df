"""Listing totals and page links stay exact while the data layer counts only when it must."""

import datetime
import json

import pytest

from resource_manager.core import counts


def seed(server, count):
    """Store `count` machines m000, m001, ... straight into the database (a third of them in use), then recount."""
    now = datetime.datetime.now(datetime.timezone.utc)
    docs = [{"hostname": f"m{i:03d}", "state": "idle" if i % 3 else "in_use", "tags": {}, "_created": now,
             "_updated": now, "_etag": f"e{i}"} for i in range(count)]
    if docs:
        server.db.machines.insert_many(docs)
    counts.recount(server.db)  # written around the API: recounted as rm-sweep does


def pages(anon, size, where=None):
    """Every page of the listing: [(hostnames, total, has_next), ...]."""
    result, page = [], 1
    while page < 50:
        # Sorted: without a sort the engine's order is its storage's (PostgreSQL reuses the space of rows
        # deleted by an earlier test), and pages must not overlap.
        params = {"max_results": size, "page": page, "sort": "hostname", **({"where": where} if where else {})}
        body = anon.get("/machines", params=params).json()
        result.append(([m["hostname"] for m in body["_items"]], body["_meta"]["total"], "next" in body["_links"]))
        if "next" not in body["_links"]:
            return result
        page += 1
    raise AssertionError("no last page")


@pytest.mark.parametrize(("count", "size"), [(0, 10), (1, 10), (9, 10), (10, 10), (11, 10), (25, 10), (30, 7)])
def test_every_page_has_the_exact_total_and_links(server, anon, count, size):
    seed(server, count)
    got = pages(anon, size)
    assert [h for hostnames, _t, _n in got for h in hostnames] == [f"m{i:03d}" for i in range(count)]
    assert {total for _h, total, _n in got} == {count}
    assert [has_next for _h, _t, has_next in got] == [True] * (len(got) - 1) + [False]


def test_totals_follow_the_where_filter(server, anon):
    seed(server, 25)
    got = pages(anon, 4, where='{"state": "in_use"}')
    assert {total for _h, total, _n in got} == {9}
    assert sum(len(h) for h, _t, _n in got) == 9


def test_a_page_beyond_the_end_reports_the_total(server, anon):
    seed(server, 12)
    body = anon.get("/machines", params={"max_results": 5, "page": 7}).json()
    assert body["_items"] == [] and body["_meta"]["total"] == 12


# A filter whose total is not kept (counts.py keeps all machines and each state): it is counted.
COUNTED = {"where": '{"state": {"$in": ["idle", "in_use"]}}'}


def test_a_full_page_reuses_a_recent_count_but_its_links_and_the_last_page_are_exact(server, anon, operator):
    seed(server, 10)
    assert anon.get("/machines", params={"max_results": 5, **COUNTED}).json()["_meta"]["total"] == 10
    assert operator.post("/machines", json={"hostname": "new", "state": "idle"}).status_code == 201
    first = anon.get("/machines", params={"max_results": 5, **COUNTED}).json()
    assert first["_meta"]["total"] == 10 and "next" in first["_links"]  # counted before, within COUNT_CACHE_SECONDS
    second = anon.get("/machines", params={"max_results": 5, "page": 2, **COUNTED}).json()
    assert "next" in second["_links"]  # the page proves an 11th exists, whatever the count said
    assert second["_meta"]["total"] == 11
    assert anon.get("/machines", params={"max_results": 5, "page": 3, **COUNTED}).json()["_meta"]["total"] == 11


def test_the_total_of_all_machines_or_one_state_is_kept_current_without_a_count(server, anon, operator):
    seed(server, 10)  # 4 in use, 6 idle
    assert anon.get("/machines", params={"max_results": 5}).json()["_meta"]["total"] == 10
    assert operator.post("/machines", json={"hostname": "new", "state": "idle"}).status_code == 201
    assert operator.write("PATCH", "/machines/m001", json={"state": "needs_repair"}).status_code == 200
    first = anon.get("/machines", params={"max_results": 5}).json()
    assert first["_meta"]["total"] == 11  # not a count made earlier: the kept one, changed with each write
    idle = anon.get("/machines", params={"max_results": 2, "where": '{"state": "idle"}'}).json()
    assert idle["_meta"]["total"] == 6 and len(idle["_items"]) == 2  # 6 + new - m001
    beyond = anon.get("/machines", params={"max_results": 5, "page": 9, "where": '{"state": "needs_repair"}'}).json()
    assert beyond["_items"] == [] and beyond["_meta"]["total"] == 1
    assert server.db.listing_counts.count_documents({}) == 0  # nothing was counted


def test_without_a_count_cache_page_one_always_counts_afresh(overrides, server):
    from .support import OPERATOR, LiveServer

    live = LiveServer(dict(overrides, COUNT_CACHE_SECONDS=0))
    try:
        anon, operator = live.session(), live.session(OPERATOR)
        seed(server, 10)
        assert anon.get("/machines", params={"max_results": 5, **COUNTED}).json()["_meta"]["total"] == 10
        assert operator.post("/machines", json={"hostname": "new", "state": "idle"}).status_code == 201
        assert anon.get("/machines", params={"max_results": 5, **COUNTED}).json()["_meta"]["total"] == 11
        assert anon.get("/machines", params={"max_results": 5, "page": 3, **COUNTED}).json()["_meta"]["total"] == 11
    finally:
        live.stop()


def test_a_count_made_by_one_worker_serves_the_others(overrides, server, anon):
    from .support import LiveServer

    seed(server, 10)
    assert anon.get("/machines", params={"max_results": 5, **COUNTED}).json()["_meta"]["total"] == 10
    seed_more = [{"hostname": f"x{i}", "state": "idle"} for i in range(3)]
    server.db.machines.insert_many(seed_more)
    other = LiveServer(overrides)  # another process would do the same: it reads listing_counts
    try:
        got = other.session().get("/machines", params={"max_results": 5, **COUNTED}).json()
        assert got["_meta"]["total"] == 10
        got = other.session().get("/machines", params={"max_results": 5, "page": 3, **COUNTED}).json()
        assert got["_meta"]["total"] == 13
    finally:
        other.stop()


def test_a_string_field_is_matched_as_the_string_it_is_even_when_it_looks_like_an_objectid(operator):
    # Reservation ids look like ObjectIds: Eve turned them into ObjectIds in ?where and matched nothing.
    assert operator.post("/machines", json={"hostname": "m1", "state": "idle"}).status_code == 201
    held = operator.post("/reservations", json={"count": 1, "job_id": "5f0c0ffee0000000000abcde"}).json()
    for where in ({"reservation": held["_id"]}, {"reservation": {"$in": [held["_id"]]}},
                  {"job_id": "5f0c0ffee0000000000abcde"}):
        found = operator.get("/machines", params={"where": json.dumps(where)}).json()["_items"]
        assert [m["hostname"] for m in found] == ["m1"], where
    machine_id = found[0]["_id"]
    for where in ({"_id": machine_id}, {"_id": {"$in": [machine_id]}}):  # _id as ever: an ObjectId
        assert len(operator.get("/machines", params={"where": json.dumps(where)}).json()["_items"]) == 1, where

"""A bare collection GET (no page, no max_results) answers every match, streamed, as the original did."""

import datetime
import subprocess
import tracemalloc

import pytest
import requests

from resource_manager.api import listing

from .support import OPERATOR, LiveServer


def store(db, count, **extra):
    """Store machines m00000, m00001, ... straight into the database (every third one in use)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    db.machines.insert_many([{"hostname": f"m{i:05d}", "state": "in_use" if i % 3 == 0 else "idle", "tags": {},
                              "_created": now, "_updated": now, "_etag": f"e{i}", **extra} for i in range(count)])


def test_a_bare_get_lists_all_150_machines_as_the_original_server_did(server, operator):
    # The case: 150 machines, one GET /machines as the original client sends it.
    created = operator.post("/machines", json=[{"hostname": f"h{i:03d}", "state": "idle"} for i in range(150)])
    assert created.status_code == 201
    response = requests.get(server.url + "/machines", auth=("admin", "nope-reads-are-open"), timeout=30)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert sorted(m["hostname"] for m in body["_items"]) == [f"h{i:03d}" for i in range(150)]
    assert body["_meta"] == {"total": 150} and set(body["_links"]) == {"parent", "self"}
    # Each item is what the paged listing gives: same fields, _etag and self link.
    paged = requests.get(server.url + "/machines", params={"max_results": 1000}, timeout=30).json()["_items"]
    assert sorted(body["_items"], key=lambda m: m["hostname"]) == sorted(paged, key=lambda m: m["hostname"])


def test_an_empty_collection(anon):
    body = anon.get("/public-addresses").json()
    assert body["_items"] == [] and body["_meta"] == {"total": 0}


def test_where_sort_and_projection_apply_to_the_bare_listing(server, anon):
    store(server.db, 1250)
    body = anon.get("/machines", params={"where": '{"state": "in_use"}', "sort": "-hostname",
                                         "projection": '{"hostname": 1}'}).json()
    assert [m["hostname"] for m in body["_items"]] == [f"m{i:05d}" for i in range(1248, -1, -3)]
    assert body["_meta"] == {"total": 417} and "state" not in body["_items"][0]
    assert body["_links"]["self"]["href"].startswith("machines?where=")
    assert anon.get("/machines", params={"where": 'state=="idle"'}).json()["_meta"] == {"total": 833}


def test_page_or_max_results_still_page(server, anon):
    store(server.db, 250)
    first = anon.get("/machines", params={"max_results": 10}).json()
    assert len(first["_items"]) == 10 and first["_meta"] == {"page": 1, "max_results": 10, "total": 250}
    assert first["_links"]["next"]["href"] == "machines?max_results=10&page=2"
    # Pages of PAGINATION_DEFAULT (100); sorted, since the stored order need not be the order of insertion
    # (the shared server's emptied tables reuse their space).
    second = anon.get("/machines", params={"page": 2, "sort": "hostname"}).json()
    assert [m["hostname"] for m in second["_items"]] == [f"m{i:05d}" for i in range(100, 200)]
    assert second["_meta"] == {"page": 2, "max_results": 100, "total": 250} and "next" in second["_links"]


def test_head_answers_without_a_body(server, operator):
    store(server.db, 3)
    response = operator.head("/machines")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["Content-Type"] == "application/json"


def test_a_refused_query_is_a_400_before_anything_is_sent(server, anon):
    store(server.db, 1)
    response = anon.get("/machines", params={"where": '{"hostname": {"$in": 5}}'})
    assert response.status_code == 400 and response.json()["_error"]["message"].startswith("the database rejected")


@pytest.fixture
def lone(overrides):
    """A server of its own: no other test's background work (recounts, feeds) in the figure."""
    live = LiveServer(overrides)
    yield live
    live.stop()


def test_server_memory_stays_bounded_while_streaming(lone, tmp_path):
    # 6,000 machines of 2 kB of tags each: a 14 MB answer. Eve's own listing would hold every
    # document and the rendered body at once; the stream holds a batch or two. The client is another
    # process (curl), so that only the server's memory is traced here.
    server = lone
    count = 6000
    store(server.db, count, tags={"notes": "x" * 2000})
    assert server.app.extensions["rm_upkeep"].counts_settled.wait(60)  # its first tick's check is done
    body = tmp_path / "body.json"
    tracemalloc.start()
    try:
        fetched = subprocess.run(["curl", "-sS", "-D", "-", "-o", str(body), server.url + "/machines"],
                                 capture_output=True, text=True, timeout=60, check=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert fetched.returncode == 0, fetched.stderr
    headers = fetched.stdout.lower()
    assert headers.startswith("http/1.1 200") and "content-length:" not in headers
    size = body.stat().st_size
    tail = body.read_bytes()[-200:]
    assert size > 13_000_000 and tail.endswith(b'"_meta": {"total": %d}}' % count)
    print(f"\nbare listing of {count} machines: {size / 1e6:.1f} MB sent, {peak / 1e6:.1f} MB peak traced memory")
    # Eve's listing would hold every document and the whole body at once (well over twice the size). The
    # stream's own batches are a few hundred kB; the driver may also receive one reply of up to the wire
    # protocol's 16 MB message at once when the engine sends more than the batch asked (10.4 MB seen here).
    assert peak < size


@pytest.fixture
def flaky_server(own_db, users_file):
    """A server on a database of its own, which the test may stop; fails fast when it is gone."""
    live = LiveServer({"MONGO_URI": own_db.uri, "MONGO_DBNAME": "stream", "USERS_FILE": users_file,
                       "MONGO_OPTIONS": {"connect": False, "tz_aware": True, "serverSelectionTimeoutMS": 1000,
                                         "connectTimeoutMS": 500}})
    yield live
    live.stop()


def test_a_database_lost_mid_stream_breaks_the_answer_off_never_a_short_list(flaky_server, own_db):
    store(flaky_server.db, 5 * listing.BATCH)
    chunks = []

    def stop_the_database(app, resource, sent):
        chunks.append(sent)
        if len(chunks) == 1:
            own_db.stop()  # the first chunk has left: the next batch cannot be read

    listing.chunk_sent.connect(stop_the_database, sender=flaky_server.app)
    try:
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.get(flaky_server.url + "/machines", timeout=30)
    finally:
        listing.chunk_sent.disconnect(stop_the_database, sender=flaky_server.app)
    assert chunks == [listing.BATCH]
    # Before any byte is sent, the same failure is an ordinary 503.
    response = flaky_server.session(OPERATOR).get("/machines")
    assert response.status_code == 503 and response.json()["_error"]["code"] == 503

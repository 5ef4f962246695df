"""GET /events over two gunicorn processes on one database: every event once, in order, and no miss on resume.

Writers on both processes race (a barrier releases them together), so event ids are taken
concurrently in two processes; a reader hangs up and resumes with Last-Event-ID again and again,
on either process, while they write. Ids that commit later below ones already read would be lost
to it: the run checks it received every id the database holds, once each, in order.
"""

import itertools
import threading

import requests

from .cluster import cluster_fixtures
from .sse import Stream
from .support import OPERATOR, run_together

shared, cluster = cluster_fixtures("events")


def stored(db):
    """Return the events the database holds, by id: [(id, type-ish)], checking the ids are 1..N."""
    ids = sorted(d["_id"] for d in db.events.find({}, {"_id": 1}))
    assert ids == list(range(1, len(ids) + 1))
    return ids


def write_machines(urls, prefix, threads=8, each=4):
    """Create, then patch, machines from `threads` threads released together, alternating servers."""

    def work(i):
        session = requests.Session()
        session.auth = OPERATOR
        url = urls[i % len(urls)]
        for j in range(each):
            name = f"{prefix}-{i}-{j}"
            assert session.post(f"{url}/machines", json={"hostname": name, "state": "idle"}, timeout=30).status_code \
                == 201
            etag = session.get(f"{url}/machines/{name}", timeout=30).json()["_etag"]
            assert session.patch(f"{url}/machines/{name}", json={"owner": f"o{i}"}, headers={"If-Match": etag},
                                 timeout=30).status_code == 200

    run_together(threads, work)
    return threads * each * 2


def test_every_event_arrives_once_in_order_and_a_resume_misses_nothing(cluster):
    servers, db = cluster
    first, second = servers.urls
    with Stream(first, last_event_id=0) as stream:
        made = write_machines(servers.urls, "a")
        got = stream.wait_for(made)
    assert len(got) == made
    ids = [i for i, _k, _d in got]
    assert ids == stored(db)  # every one, once, in order: 1..N
    kinds = {}
    for _i, kind, data in got:
        kinds.setdefault(data["hostname"], []).append(kind)
    assert all(k == ["machine.created", "machine.updated"] for k in kinds.values())
    # Hung up: more changes meanwhile; resumed on the other process with Last-Event-ID.
    made_later = write_machines(servers.urls, "b")
    with Stream(second, last_event_id=stream.last_id) as resumed:
        later = resumed.wait_for(made_later)
        assert resumed.wait_for(made_later + 1, timeout=1) == later  # nothing repeated after
    assert [i for i, _k, _d in later] == stored(db)[made:]


def test_a_reader_resuming_again_and_again_while_both_processes_write_misses_nothing(cluster):
    servers, db = cluster
    received, done = [], threading.Event()
    position = 0

    def read():
        nonlocal position
        for url in itertools.cycle(servers.urls):
            with Stream(url, last_event_id=position) as stream:
                stream.wait_for(7, timeout=5)  # hang up after a few: resume on the other process
            got = stream.events  # all it parsed before hanging up, and its resume point with them
            received.extend(i for i, _k, _d in got)

            position = stream.last_id if stream.last_id is not None else position
            if done.is_set() and not got:
                return

    reader = threading.Thread(target=read)
    reader.start()
    for run in range(3):
        write_machines(servers.urls, f"r{run}", threads=8, each=3)
    done.set()
    reader.join(120)
    assert not reader.is_alive()
    assert received == stored(db)  # each id once, in order, none lost

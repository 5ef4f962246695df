"""Two hosts, one database: no lost update, and a host killed while it holds the write lock.

Two gunicorn servers, each a simulated host (tests/cluster.py: a lock directory of its own, the
write lock's PostgreSQL given as a deployment gives it), over one FerretDB and one PostgreSQL.
test_atomic.py's races and test_queue_concurrency.py's queue proofs run on the same two hosts.
Why one FerretDB and not one per host: test_a_second_ferretdb_over_one_postgresql_misses_what_the_first_creates.
"""

import os
import random
import signal
import threading
import time
import uuid

import bson
import psycopg
import pymongo
import pymongo.errors
import pytest
import requests

from resource_manager.core import storage
from resource_manager.core.check import check
from resource_manager.localdb import build
from resource_manager.localdb.launcher import read_ready_line, spawn_ferretdb, wait_for_ping

from .cluster import cluster_fixtures, host_env, running_cluster
from .support import ADMIN, OPERATOR, run_together

shared, cluster = cluster_fixtures("multihost")

BATCH = 10  # pairs released together


def call(url, method, path, auth=OPERATOR, **kwargs):
    with requests.Session() as s:
        s.auth = auth
        r = s.request(method, url + path, timeout=60, **kwargs)
    return r.status_code, (r.json() if r.content else None)


def lost_updates(urls, pairs, prefix):
    """Send `pairs` pairs of PATCHes with one If-Match, one to each host; return how many were both 200.

    Each pair's two PATCHes set different fields; a pair answered (200, 200) lost one acknowledged change.
    Raises AssertionError when a pair is answered anything but (200, 412) or (200, 200), or a 200's
    change is missing (the (200, 412) case: the 412's change must be absent).
    """
    both = 0
    for start in range(0, pairs, BATCH):
        names = [f"{prefix}{start + k}" for k in range(min(BATCH, pairs - start))]
        status, _ = call(urls[0], "POST", "/machines", json=[{"hostname": n, "state": "idle"} for n in names])
        assert status == 201
        etags = {n: call(urls[0], "GET", f"/machines/{n}")[1]["_etag"] for n in names}
        bodies = [{"owner": "host0"}, {"tags": {"by": "host1"}}]

        def patch(i, names=names, etags=etags, bodies=bodies):
            name = names[i // 2]
            return call(urls[i % 2], "PATCH", f"/machines/{name}", json=bodies[i % 2],
                        headers={"If-Match": etags[name]})[0]

        codes = run_together(2 * len(names), patch)
        for k, name in enumerate(names):
            pair = codes[2 * k:2 * k + 2]
            doc = call(urls[0], "GET", f"/machines/{name}")[1]
            present = [doc.get("owner") == "host0", doc.get("tags", {}).get("by") == "host1"]
            if pair == [200, 200]:
                both += 1
                continue
            assert sorted(pair) == [200, 412], (name, pair)
            assert present == [code == 200 for code in pair], (name, pair, doc)
    return both


def test_two_hosts_never_both_accept_one_if_match(cluster):
    """The issue's table, second row: each host its own lock directory; now 0 pairs lose a change."""
    cluster, db = cluster
    for server in cluster.servers:
        body = requests.get(server.url + "/healthz", timeout=10).json()
        assert (body["write_lock"], body["write_lock_scope"]) == ("postgresql-advisory", "database")
    assert lost_updates(cluster.urls, 20, "p") == 0
    assert check(db, grace=0) == []


@pytest.mark.slow
def test_fifty_pairs_on_two_hosts_lose_nothing(cluster):
    cluster, db = cluster
    both = lost_updates(cluster.urls, 50, "q")
    print(f"two hosts, advisory lock: {both} of 50 pairs both 200")
    assert both == 0


@pytest.mark.slow
def test_host_locks_on_two_hosts_would_lose_changes(localdb, users_file, tmp_path):
    """The control: the same pairs on two hosts serialised by host-wide locks only (the old scope) lose changes.

    Shows that the pairs above race for real; stops at the first lost change.
    """
    env = dict(host_env(localdb), RM_WRITE_SERIALISATION="host")
    dbname = f"test_hostlocks_{uuid.uuid4().hex[:8]}"
    from .cluster import Cluster

    pair = Cluster(localdb.uri, dbname, users_file, str(tmp_path), env=env)
    try:
        lost = sum(lost_updates(pair.urls, BATCH, f"c{k}-") for k in range(5))
        print(f"two hosts, host-wide locks: {lost} of 50 pairs both 200")
        assert lost > 0
    finally:
        pair.stop()
        with pymongo.MongoClient(localdb.uri) as client:
            client.drop_database(dbname)


# A host killed while it holds the write lock.

def lock_holders(conn, key):
    """Return the client pids (as their application_name says) of the sessions holding advisory lock `key`."""
    rows = conn.execute(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND ((l.classid::bigint << 32) | l.objid::bigint) = %s",
        (key,)).fetchall()
    return {int(name.split()[2]) for (name,) in rows if name.startswith("rm-write-lock pid ")}


class Load:
    """Clients PATCHing tags (If-Match) and reserving/releasing through both hosts until stopped.

    Keeps, per (machine, client), the last acknowledged tag value and the values sent since whose
    answers were lost: what the database may hold afterwards.
    """

    def __init__(self, urls, machines, clients=6):
        self.urls, self.machines = urls, machines
        self.stop = threading.Event()
        self.acked, self.maybe = {}, {}
        self.answers = {"200": 0, "412": 0, "lost": 0, "other": 0}
        self.reservations = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(clients)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(120)

    def note(self, key):
        with self.lock:
            self.answers[key] += 1

    def run(self, i):
        rng = random.Random(i)
        with requests.Session() as s:
            s.auth = OPERATOR
            n = 0
            while not self.stop.is_set():
                url = rng.choice(self.urls)
                name = rng.choice(self.machines)
                try:
                    if rng.random() < 0.2:
                        self.reserve(s, url, rng)
                        continue
                    doc = s.get(f"{url}/machines/{name}", timeout=30).json()
                    n += 1
                    key = (doc["_id"], i)
                    self.maybe.setdefault(key, set()).add(n)
                    r = s.patch(f"{url}/machines/{name}", json={"tags": {f"w{i}": n}},
                                headers={"If-Match": doc["_etag"]}, timeout=30)
                except requests.RequestException:
                    self.note("lost")
                    continue
                self.note(str(r.status_code) if r.status_code in (200, 412) else "other")
                if r.status_code == 200:
                    self.acked[key], self.maybe[key] = n, set()
                elif r.status_code in (412, 503):
                    self.maybe[key].discard(n)

    def reserve(self, s, url, rng):
        r = s.post(f"{url}/reservations", json={"count": 1, "owner": "load",
                                                "where": {"hostname": {"$in": self.machines}}}, timeout=30)
        if r.status_code == 201:
            with self.lock:
                self.reservations.append(r.json()["_id"])
            s.delete(f"{rng.choice(self.urls)}/reservations/{r.json()['_id']}", timeout=30)

    def assert_nothing_lost(self, db):
        """Assert each (machine, client) holds its last acknowledged value, or a later one whose answer was lost."""
        for (mid, i), value in self.acked.items():
            stored = db.machines.find_one({"_id": bson.ObjectId(mid)})["tags"].get(f"w{i}")
            assert stored == value or stored in self.maybe.get((mid, i), ()), (mid, i, value, stored)


def kill_while_holding(victim, localdb, key, deadline=60):
    """Freeze `victim` (SIGSTOP) at a moment PostgreSQL says one of its workers holds the lock, then return.

    Retries until the holder seen before the freeze still holds it after (so it froze mid-write).
    Raises AssertionError if that never happens before `deadline` seconds.
    """
    end = time.monotonic() + deadline
    workers = set(victim.worker_pids())
    with psycopg.connect(localdb.postgres_url, autocommit=True) as conn:
        while time.monotonic() < end:
            if not lock_holders(conn, key) & workers:
                continue
            os.killpg(victim.process.pid, signal.SIGSTOP)
            # An unlock sent just before the stop is still carried out by PostgreSQL: give it time to
            # land, then look again. Still held now, it is held by a frozen process.
            time.sleep(0.2)
            if lock_holders(conn, key) & workers:
                return
            os.killpg(victim.process.pid, signal.SIGCONT)
    raise AssertionError("never saw the victim holding the write lock")


@pytest.mark.parametrize("rounds", [1, pytest.param(4, marks=pytest.mark.slow)])
def test_a_host_killed_while_holding_the_lock_stalls_the_other_only_until_it_is_gone(localdb, users_file, tmp_path,
                                                                                      rounds):
    with running_cluster(localdb, users_file, str(tmp_path), "kill") as (cluster, db):
        victim, survivor = cluster.servers
        machines = [f"k{i}" for i in range(12)]  # the load's; the one write watched gets one of its own
        status, _ = call(survivor.url, "POST", "/machines", json=[{"hostname": n, "state": "idle"}
                                                                 for n in machines + [f"w{r}" for r in range(rounds)]])
        assert status == 201
        key = storage.postgresql(db, localdb.postgres_url).advisory_key()
        for round_ in range(rounds):
            load = Load([victim.url, survivor.url], machines).start()
            try:
                kill_while_holding(victim, localdb, key)
                # Frozen with the lock held: a write on the other host waits for it...
                name = f"w{round_}"
                etag = call(survivor.url, "GET", f"/machines/{name}")[1]["_etag"]
                answer = {}

                def write(answer=answer, name=name, etag=etag, round_=round_):
                    answer["code"] = call(survivor.url, "PATCH", f"/machines/{name}",
                                          json={"owner": f"after-kill-{round_}"}, headers={"If-Match": etag})[0]

                writer = threading.Thread(target=write)
                writer.start()
                writer.join(0.5)
                assert writer.is_alive(), f"a write answered {answer} while another host held the lock"
                # ...until the host dies: PostgreSQL ends its session, and the lock with it.
                killed = time.monotonic()
                os.killpg(victim.process.pid, signal.SIGKILL)
                victim.process.wait(10)
                writer.join(30)
                waited = time.monotonic() - killed
                assert answer.get("code") == 200, answer
                print(f"round {round_}: the other host's write answered {answer['code']} {waited:.2f} s after the kill")
                time.sleep(1.0)  # the survivor's load goes on alone for a moment
            finally:
                load.finish()
            assert load.answers["200"] > 0, load.answers
            print(f"round {round_}: answers {load.answers}")
            status, swept = call(survivor.url, "POST", "/reservations/sweep?grace=0", auth=ADMIN)
            assert status == 200, swept
            load.assert_nothing_lost(db)
            assert check(db, grace=0) == []
            assert db.reservations.count_documents({"state": "pending"}) == 0
            if round_ < rounds - 1:
                victim.start()  # the host comes back for the next round


# Item 2 of issue 22: several FerretDB processes over one PostgreSQL do not work (FerretDB v1).

def test_a_second_ferretdb_over_one_postgresql_misses_what_the_first_creates(localdb, tmp_path):
    """FerretDB v1 caches its catalogue (databases, collections, indexes) per process, loaded once.

    A second FerretDB over the same PostgreSQL database does not see a collection the first creates
    after it loaded: its reads answer as if it were empty, and its writes fail. So one FerretDB
    serves a PostgreSQL database; the API hosts share it (docs/operations/scaling.md).
    """
    second = spawn_ferretdb(build(), "127.0.0.1:0", ["-handler", "postgresql", "-postgresql-url",
                                                      localdb.postgres_url], str(tmp_path / "second.log"))
    name = f"test_two_ferretdbs_{uuid.uuid4().hex[:8]}"
    try:
        uri = read_ready_line(second, 30)
        wait_for_ping(uri, second, 30)
        with pymongo.MongoClient(localdb.uri) as first, pymongo.MongoClient(uri) as other:
            other.list_database_names()  # the second has loaded its catalogue
            first[name].things.insert_one({"_id": 1})
            assert first[name].things.find_one() == {"_id": 1}
            assert other[name].things.find_one() is None  # a stale catalogue: the document is not "there"
            with pytest.raises(pymongo.errors.OperationFailure):
                other[name].things.insert_one({"_id": 2})
            first.drop_database(name)
    finally:
        second.terminate()
        second.wait(10)
        second.stdout.close()

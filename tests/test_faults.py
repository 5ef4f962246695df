"""Faults under load: the database stopped or SIGKILLed, an API worker SIGKILLed; no acknowledged write lost.

Each test runs one fault round in `make test`; the `slow` variants (`make soak`) run several rounds
with more clients.
"""

import os
import signal
import threading
import time
import uuid

import pymongo
import pytest
import requests

from .deployed import Gunicorn
from .support import ADMIN, OPERATOR, LiveServer

FIELDS = {"_id", "hostname", "state", "owner", "tags", "_etag", "_created", "_updated"}
FAST_FAIL = {"connect": False, "tz_aware": True, "serverSelectionTimeoutMS": 500, "connectTimeoutMS": 500}


class Load:
    """Clients creating machines concurrently, each remembering what every request answered.

    An answer is a status code, or "lost" when the connection broke (the write may or may not
    have happened). After a lost answer a client asks again with the same hostname: a 409/422
    "not unique" then means the first attempt did land.
    """

    def __init__(self, url, clients, per_client, seconds, prefix=None):
        self.url = url
        self.clients = clients
        self.per_client = per_client
        self.deadline = time.monotonic() + seconds
        self.prefix = prefix or uuid.uuid4().hex[:6]
        self.answers = {}  # hostname -> [answer, ...]
        self.events = []  # (time, hostname, answer), in order
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(c,), daemon=True) for c in range(clients)]

    def _record(self, hostname, answer):
        with self._lock:
            self.answers.setdefault(hostname, []).append(answer)
            self.events.append((time.monotonic(), hostname, answer))

    def _client(self, number):
        with requests.Session() as session:
            session.auth = OPERATOR
            for i in range(self.per_client):
                hostname = f"{self.prefix}-{number}-{i}"
                for _attempt in range(3):
                    if time.monotonic() > self.deadline or self._stop.is_set():
                        return
                    try:
                        response = session.post(self.url + "/machines", timeout=15,
                                                json={"hostname": hostname, "state": "idle", "owner": f"c{number}"})
                        answer = response.status_code
                    except requests.RequestException:
                        answer = "lost"
                    self._record(hostname, answer)
                    if answer in (201, 409, 422):
                        break
                    time.sleep(0.05)

    def start(self):
        for thread in self._threads:
            thread.start()
        return self

    def stop(self):
        """Let every client finish its request in flight, then stop; return the load."""
        self._stop.set()
        self.join()
        return self

    def join(self):
        for thread in self._threads:
            thread.join(timeout=max(1.0, self.deadline - time.monotonic() + 30))
        assert not any(t.is_alive() for t in self._threads), "load clients did not finish in time"

    def count(self, answer):
        with self._lock:
            return sum(1 for _t, _h, a in self.events if a == answer)

    def wait_for(self, answer, count, timeout):
        """Wait until `count` requests have had `answer`; return whether they did."""
        deadline = time.monotonic() + timeout
        while self.count(answer) < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def summary(self):
        """Return how often each answer came, for the log of a soak run."""
        with self._lock:
            counts = {}
            for _t, _h, answer in self.events:
                counts[answer] = counts.get(answer, 0) + 1
        return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=str))

    def acknowledged(self):
        """Hostnames some request got a 201 for."""
        return {h for h, answers in self.answers.items() if 201 in answers}


def assert_consistent(db, load, acknowledged=None):
    """Every acknowledged machine is stored, whole, once; nothing stored that nobody asked for."""
    print(f"\n{load.clients} clients, {len(load.answers)} hostnames; answers: {load.summary()}")
    acknowledged = load.acknowledged() if acknowledged is None else acknowledged
    docs = list(db.machines.find({"hostname": {"$regex": f"^{load.prefix}-"}}))
    stored = [d["hostname"] for d in docs]
    assert len(stored) == len(set(stored)), "a hostname is stored twice"
    missing = acknowledged - set(stored)
    assert not missing, f"{len(missing)} acknowledged writes are not in the database: {sorted(missing)[:5]}"
    assert set(stored) <= set(load.answers), "the database holds machines nobody created"
    for doc in docs:
        assert set(doc) == FIELDS, f"half-written document: {doc}"
        assert doc["state"] == "idle" and doc["owner"] == "c" + doc["hostname"].split("-")[1]
    for hostname, answers in load.answers.items():
        if answers[-1] in (409, 422):  # "not unique" after a lost answer: the lost one landed
            assert "lost" in answers or 503 in answers, (hostname, answers)
            assert hostname in stored


# 1. The database stopped mid-load: 503s, then recovery without restarting the API.

@pytest.mark.parametrize("rounds", [1, pytest.param(4, marks=pytest.mark.slow)])
def test_database_stopped_mid_load_gives_503_then_recovers(own_db, users_file, rounds):
    live = LiveServer({"MONGO_URI": own_db.uri, "MONGO_DBNAME": "faults", "USERS_FILE": users_file,
                       "MONGO_OPTIONS": FAST_FAIL})
    try:
        load = Load(live.url, clients=4, per_client=5000, seconds=60 * rounds).start()
        for r in range(rounds):
            assert load.wait_for(201, 20 * (r + 1), timeout=30)
            own_db.stop()
            assert load.wait_for(503, 5 * (r + 1), timeout=30), f"no 503 while the database was down: {load.summary()}"
            own_db.start()
            assert load.wait_for(201, load.count(201) + 10, timeout=30), "no recovery after the database returned"
        load.stop()
        statuses = {a for answers in load.answers.values() for a in answers}
        assert statuses <= {201, 409, 422, 503}, statuses
        # A write cut off between its document and its counter (core/counts.py) left drift: the
        # upkeep recounts once the database answers again.
        assert live.app.extensions["rm_upkeep"].counts_settled.wait(60)
        with requests.Session() as session:
            assert session.get(live.url + "/healthz", timeout=10).json()["database"] == "up"
            body = session.get(live.url + "/machines", params={"max_results": 1}, timeout=10).json()
        assert body["_meta"]["total"] == live.db.machines.count_documents({})
        assert_consistent(live.db, load)
    finally:
        live.stop()


# 2. The database SIGKILLed and restarted on the same port and data directory.

@pytest.mark.parametrize("rounds", [1, pytest.param(5, marks=pytest.mark.slow)])
def test_database_killed_and_restarted_keeps_acknowledged_writes(own_db, users_file, rounds):
    live = LiveServer({"MONGO_URI": own_db.uri, "MONGO_DBNAME": "faults", "USERS_FILE": users_file,
                       "MONGO_OPTIONS": FAST_FAIL})
    raw_acked = []
    stop_raw = threading.Event()

    def raw_writer():
        # The driver's own acknowledged inserts (w=1 by default) must survive as well.
        client = pymongo.MongoClient(own_db.uri, **FAST_FAIL)
        try:
            for i in range(100_000):
                if stop_raw.is_set():
                    return
                try:
                    client.faults.raw.insert_one({"_id": i, "n": i})
                    raw_acked.append(i)
                except pymongo.errors.PyMongoError:
                    time.sleep(0.05)
        finally:
            client.close()

    raw = threading.Thread(target=raw_writer, daemon=True)
    try:
        load = Load(live.url, clients=4, per_client=5000, seconds=60 * rounds).start()
        raw.start()
        port, data_dir = own_db.port, own_db.data_dir
        for r in range(rounds):
            assert load.wait_for(201, 20 * (r + 1), timeout=30)
            own_db.kill()
            time.sleep(0.3)
            assert own_db.start() == f"mongodb://127.0.0.1:{port}/"
            assert (own_db.port, own_db.data_dir) == (port, data_dir)
            assert load.wait_for(201, load.count(201) + 10, timeout=30), "no recovery after the restart"
        load.stop()
        stop_raw.set()
        raw.join(timeout=30)
        assert_consistent(live.db, load)
        stored_raw = {d["_id"] for d in live.db.client.faults.raw.find({}, {"_id": 1})}
        assert raw_acked and set(raw_acked) <= stored_raw
    finally:
        stop_raw.set()
        live.stop()


# 3. An API worker SIGKILLed mid-load (gunicorn, several workers, as deployed).

@pytest.fixture
def gunicorn(localdb, users_file, dbname, tmp_path):
    with Gunicorn(localdb.uri, dbname, users_file, str(tmp_path / "gunicorn.log"), workers=3, threads=2) as server:
        yield server
    with pymongo.MongoClient(localdb.uri) as client:
        client.drop_database(dbname)


@pytest.mark.parametrize("rounds", [1, pytest.param(5, marks=pytest.mark.slow)])
def test_worker_killed_mid_load_loses_no_acknowledged_write(gunicorn, localdb, dbname, rounds):
    workers = gunicorn.wait_for_workers(3)
    load = Load(gunicorn.url, clients=8, per_client=5000, seconds=60 * rounds).start()
    killed = []
    for r in range(rounds):
        assert load.wait_for(201, 30 * (r + 1), timeout=30)
        victim = workers[r % len(workers)]
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)
        workers = gunicorn.wait_for_workers(3, exclude=killed)  # raises if gunicorn does not replace it
        assert load.wait_for(201, load.count(201) + 20, timeout=30), "no progress after the kill"
    load.stop()
    statuses = {a for answers in load.answers.values() for a in answers}
    assert statuses <= {201, 409, 422, "lost"}, statuses
    with pymongo.MongoClient(localdb.uri) as client:
        assert_consistent(client[dbname], load)
    with requests.Session() as session:
        session.auth = OPERATOR
        assert session.get(gunicorn.url + "/healthz", timeout=10).status_code == 200
        assert session.post(gunicorn.url + "/machines", json={"hostname": f"{load.prefix}-after", "state": "idle"},
                            timeout=10).status_code == 201


# 4. A worker SIGKILLed while clients reserve and release: after the sweep, nothing is held
#    without a reservation, and every acknowledged reservation holds exactly its machines.

def test_worker_killed_while_reserving_leaves_nothing_held_after_the_sweep(localdb, users_file, dbname, tmp_path):
    from .support import seed_machines

    with pymongo.MongoClient(localdb.uri) as client:
        db = client[dbname]
        seed_machines(db, 200, prefix="r")
        server = Gunicorn(localdb.uri, dbname, users_file, str(tmp_path / "gunicorn.log"), workers=3, threads=2,
                          env={"RM_SWEEP_GRACE_SECONDS": "1"})
        with server:
            workers = server.wait_for_workers(3)
            acked, lock = {}, threading.Lock()  # reservation id -> hostnames, for every 201 still held
            released = set()
            stop = threading.Event()

            def reserver(number):
                mine = []
                with requests.Session() as session:
                    session.auth = OPERATOR
                    for i in range(200):
                        if stop.is_set():
                            return
                        key = f"c{number}-{i}"
                        for _attempt in range(3):  # after a lost answer, the same key tells what happened
                            try:
                                r = session.post(server.url + "/reservations", timeout=30,
                                                 json={"count": 2, "owner": f"c{number}", "job_id": key},
                                                 headers={"Idempotency-Key": key})
                            except requests.RequestException:
                                time.sleep(0.1)
                                continue
                            if r.status_code == 201:
                                with lock:
                                    acked[r.json()["_id"]] = set(r.json()["hostnames"])
                                mine.append(r.json()["_id"])
                            break
                        if i % 2 and mine:  # release our oldest now and then, so machines come back
                            rid = mine.pop(0)
                            try:
                                if session.delete(f"{server.url}/reservations/{rid}", timeout=30).ok:
                                    with lock:
                                        released.add(rid)
                                        acked.pop(rid, None)
                            except requests.RequestException:
                                with lock:  # released or not: the invariants below judge it
                                    acked.pop(rid, None)

            threads = [threading.Thread(target=reserver, args=(n,), daemon=True) for n in range(6)]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 30
            while len(acked) + len(released) < 10 and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(workers[0], signal.SIGKILL)
            server.wait_for_workers(3, exclude=[workers[0]])
            deadline = time.monotonic() + 30
            before = len(acked) + len(released)
            while len(acked) + len(released) < before + 10 and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
            # Every client has stopped: nothing is in flight, so the sweep need not wait out a grace period.
            with requests.Session() as admin:
                admin.auth = ADMIN
                assert admin.post(server.url + "/reservations/sweep?grace=0", timeout=60).status_code == 200

        reservations = {r["_id"]: r for r in db.reservations.find()}
        active = {str(rid): set(r.get("hostnames") or []) for rid, r in reservations.items() if r["state"] == "active"}
        assert not [r for r in reservations.values() if r["state"] == "pending"], "a half-done reservation is left"
        held = [h for hosts in active.values() for h in hosts]
        assert len(held) == len(set(held)), "a machine is in two active reservations"
        for rid, hostnames in acked.items():
            assert active.get(str(rid)) == hostnames, f"acknowledged reservation {rid} does not hold its machines"
        machines = {m["hostname"]: m for m in db.machines.find()}
        holder = {h: rid for rid, hosts in active.items() for h in hosts}
        for hostname, machine in machines.items():
            if machine["state"] == "in_use":
                assert hostname in holder, f"{hostname} is held without a reservation"
                assert str(machine.get("reservation")) == holder[hostname]
            else:
                assert hostname not in holder and not machine.get("reservation"), hostname
        names = {m["_id"]: hostname for hostname, m in machines.items()}
        claims = {names.get(c["_id"], c["_id"]): str(c.get("holder")) for c in db.machine_claims.find()}
        assert claims == holder, "claims and active reservations disagree"
        print(f"\n{len(acked)} reservations held, {len(released)} released, {len(reservations)} in all")

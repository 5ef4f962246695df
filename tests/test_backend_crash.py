"""A PostgreSQL backend SIGKILLed under the embedded database: 503 with Retry-After, never 500; clients ride it out.

PostgreSQL answers the death of one backend by restarting them all (crash recovery, about a second):
FerretDB then answers OperationFailure code 1 ("broken pipe", "in recovery mode", "unexpected EOF").
The reserve that was under way when it happened leaves a pending reservation that its own undo
could not remove (the database was away): the API undoes it once the database is back, so the
retry with the same Idempotency-Key succeeds instead of waiting for the sweep's grace period.
"""

import collections
import os
import signal
import threading
import time

import psutil
import pymongo.errors
import pytest
from flask import request_finished

from resource_manager.api import errors
from resource_manager.clientlib.client import ResourceManagerClient
from resource_manager.core import check

from .support import ADMIN, OPERATOR, LiveServer, seed_machines

CLIENTS = 4
CYCLES = 3  # reserve-and-release cycles each client completes before the kill, and again after it


def backends(localdb):
    """Return the PostgreSQL backends serving FerretDB (not the server's own background processes)."""
    postmaster = psutil.Process(localdb.postgres.process.pid)
    return [p for p in postmaster.children() if " ferretdb " in " ".join(p.cmdline()) + " "]


def test_a_killed_backend_answers_503_never_500_and_clients_ride_it_out(own_db, users_file, dbname):
    live = LiveServer({"MONGO_URI": own_db.uri, "MONGO_DBNAME": dbname, "USERS_FILE": users_file})
    answers, lock = collections.Counter(), threading.Lock()

    def answered(app, response, **_extra):
        with lock:
            answers[response.status_code] += 1

    request_finished.connect(answered, live.app)
    try:
        seed_machines(live.db, 40, prefix="k")
        done = collections.Counter()  # cycles completed, per client
        failures, slowest, retries = [], [0.0], []
        stop = threading.Event()

        def client(number):
            # The library as a CI job uses it: default retries (5, at most 30 s after the first failure).
            with ResourceManagerClient("machines", live.url, *OPERATOR, on_retry=retries.append) as rm:
                while not stop.is_set():
                    started = time.monotonic()
                    try:
                        res = rm.reserve(2, job_id=f"crash-{number}")
                        rm.release(res["_id"])
                    except Exception as e:  # noqa: BLE001 - every failure is the finding
                        failures.append(f"client {number}: {type(e).__name__}: {e}")
                        return
                    with lock:
                        slowest[0] = max(slowest[0], time.monotonic() - started)
                        done[number] += 1

        threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        _wait_for(lambda: all(done[n] >= CYCLES for n in range(CLIENTS)) or failures, "clients to get going")
        victim = backends(own_db)[0]
        os.kill(victim.pid, signal.SIGKILL)
        after = dict(done)
        _wait_for(lambda: all(done[n] >= after[n] + CYCLES for n in range(CLIENTS)) or failures,
                  "every client to complete cycles after the kill")
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        assert not failures, failures
        assert answers[500] == 0, f"{answers[500]} answers of 500: {dict(answers)}"
        assert answers[503] >= 1 and retries, f"the kill went unnoticed: {dict(answers)}"  # not vacuous
        assert {r.status for r in retries} == {503}, [(r.status, r.error) for r in retries]
        # The reserve that was cut off left nothing pending: its retry made the reservation anew.
        assert live.db.reservations.count_documents({"state": "pending"}) == 0
        # A retried call waited out Retry-After (5 s) about once: not the sweep's 2 minutes.
        assert slowest[0] < 20, f"a call took {slowest[0]:.1f} s"
        with live.session(ADMIN) as admin:
            assert admin.post("/reservations/sweep?grace=0").status_code == 200
        assert check.check(live.db) == []
        print(f"\nbackend killed: {dict(answers)} answers, {len(retries)} retries, slowest call {slowest[0]:.1f} s")
    finally:
        live.stop()


def _wait_for(condition, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# The errors that mean "the database is away for now": FerretDB's texts from PostgreSQL's driver,
# as the fault test above and a stopped PostgreSQL produce them. Anything else stays a 500.
UNAVAILABLE = [
    "failed to connect to `user=postgres database=ferretdb`: /d/pg/.s.PGSQL.5432 (/d/pg): server error: FATAL: "
    "the database system is in recovery mode (SQLSTATE 57P03)",
    "failed to connect to `user=postgres database=ferretdb`: /d/pg/.s.PGSQL.5432 (/d/pg): server error: FATAL: "
    "the database system is not yet accepting connections (SQLSTATE 57P03)",
    "FATAL: terminating connection because of crash of another server process (SQLSTATE 57P02)",
    "FATAL: terminating connection due to administrator command (SQLSTATE 57P01)",
    "[query_iterator.go:92 postgresql.(*queryIterator).Next] write failed: write unix @->/d/pg/.s.PGSQL.5432: "
    "write: broken pipe",
    "[collection.go:227 postgresql.(*collection).UpdateAll] read unix @->/d/pg/.s.PGSQL.5432: read: connection "
    "reset by peer",
    "[collection.go:227 postgresql.(*collection).UpdateAll] unexpected EOF",
    "failed to connect to `user=postgres database=ferretdb`: /d/pg/.s.PGSQL.5432 (/d/pg): dial error: dial unix "
    "/d/pg/.s.PGSQL.5432: connect: connection refused",
]
NOT_UNAVAILABLE = [
    "ERROR: duplicate key value violates unique constraint (SQLSTATE 23505)",
    "ERROR: unsupported Unicode escape sequence (SQLSTATE 22P05)",
    "ERROR: out of memory (SQLSTATE 53200)",
    "the pipe of the machine is broken",
    "invalid key: broken pipe in the middle",
    "value 'x] unexpected EOF' is not valid: too long",
]


@pytest.mark.parametrize("message", UNAVAILABLE)
def test_errors_meaning_the_database_is_away_are_unavailable(message):
    assert errors.database_unavailable(pymongo.errors.OperationFailure(message, 1, {"errmsg": message, "code": 1}))


@pytest.mark.parametrize("message", NOT_UNAVAILABLE)
def test_other_database_errors_stay_errors(message):
    assert not errors.database_unavailable(pymongo.errors.OperationFailure(message, 1, {"errmsg": message,
                                                                                          "code": 1}))
    # The same text under another code is not FerretDB's relay of a PostgreSQL failure either.
    assert not errors.database_unavailable(pymongo.errors.OperationFailure(UNAVAILABLE[0], 2))

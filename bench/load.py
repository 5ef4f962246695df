"""Closed-loop load from several client processes, started together, bounded in time and count."""

import multiprocessing
import statistics
import time

# spawn: no client process inherits the parent's MongoClient or sockets.
CTX = multiprocessing.get_context("spawn")
MAX_OPS = 1_000_000  # per client and run: a bound even if the clock misbehaves


def _client(target, args, barrier, seconds, results):
    setup = target(*args)  # returns a callable doing one operation, after its own set-up
    barrier.wait(timeout=120)
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    errors = 0
    while count < MAX_OPS:
        try:
            setup()
        except Exception:  # noqa: BLE001 - counted and reported, never hidden
            errors += 1
        count += 1
        if time.perf_counter() >= deadline:
            break
    results.put((count, time.perf_counter() - start, errors))


def throughput(target, args, clients, seconds):
    """Run `target(*args)()` in a loop in `clients` processes for `seconds`; return (ops/s, errors)."""
    barrier = CTX.Barrier(clients)
    results = CTX.Queue()
    procs = [CTX.Process(target=_client, args=(target, args, barrier, seconds, results), daemon=True)
             for _ in range(clients)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=seconds + 180) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    ops = sum(count for count, _elapsed, _errors in outcomes)
    elapsed = max(elapsed for _count, elapsed, _errors in outcomes)
    return ops / elapsed, sum(errors for _c, _e, errors in outcomes)


def median_of(runs, fn):
    """Call fn() `runs` times; return the median and all values."""
    values = [fn() for _ in range(runs)]
    return statistics.median(values), values

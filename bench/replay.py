"""Replay a lab through the scheduling rule: 10,000 machines, 50,000 requests, against two simpler rules.

`python -m bench.replay [--machines N] [--requests N] [--seed S]` (and `make bench`, which writes the
table into BENCHMARKS.md). No database and no server: core/schedule.plan() is called at every event
(an arrival, a release) of a simulated lab, as the service's granting passes call it, and its grants
are applied. The same arrivals go through two baselines written here, measured in the same run:

- fifo: first come, first served, and the head of the line blocks everyone behind it (no backfill);
- first-fit: whoever fits goes, in arrival order (no earmarks: the most machines busy, but a large
  request waits until the lab happens to drain for it).

The lab: machines in ten classes (a rack, a hardware kind) of equal size; a request asks for one
class (70%), two (20%) or any machine (10%); mostly 1-4 machines, sometimes 8-32, rarely 100; a lease
of 10 min to 4 h, of which a job uses 30-100% before releasing; priorities 30, 50 or 80. Arrivals are
Poisson at a rate that keeps the lab about 90% busy under first-fit. Every rule acts on ticks of
TICK seconds (the service's passes run every 0.25 s, and at every release and arrival): events
within a tick are taken together.
"""

import argparse
import datetime
import heapq
import random
import statistics
import sys
import time

from resource_manager.core import schedule

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
CLASSES = 10
LEASES = (600, 1800, 3600, 4 * 3600)
TICK = 30.0


def workload(machines, requests, seed):
    """Return the requests of the replay: (arrival s, count, classes, lease, duration, priority)."""
    rng = random.Random(seed)
    per_class = machines // CLASSES
    jobs = []
    for _ in range(requests):
        r = rng.random()
        classes = (rng.randrange(CLASSES),) if r < 0.7 else (
            tuple(rng.sample(range(CLASSES), 2)) if r < 0.9 else tuple(range(CLASSES)))
        size = rng.random()
        count = rng.randint(1, 4) if size < 0.85 else rng.randint(8, 32) if size < 0.995 else min(100, per_class)
        lease = rng.choice(LEASES)
        jobs.append([count, classes, lease, lease * rng.uniform(0.3, 1.0), rng.choice((30, 50, 50, 50, 80))])
    mean_work = statistics.mean(c * d for c, _cl, _l, d, _p in jobs)
    rate = 0.9 * machines / mean_work  # arrivals per second for ~90% busy
    t = 0.0
    for job in jobs:
        t += rng.expovariate(rate)
        job.insert(0, t)
    return [tuple(j) for j in jobs]


class Lab:
    """The simulated lab: free machines per class, releases to come, waits and busy machine-seconds."""

    def __init__(self, machines):
        self.per_class = machines // CLASSES
        self.n = self.per_class * CLASSES
        self.free = set(range(self.n))
        self.machines = {k: schedule.Machine(k, True) for k in range(self.n)}  # kept up to date, not rebuilt
        self.releases = []  # heap of (time, job id, machines)
        self.holder_of = {}
        self.holders = {}
        self.waits, self.busy, self.last = {}, 0.0, 0.0

    def matches(self, classes):
        return frozenset(k for c in classes for k in range(c * self.per_class, (c + 1) * self.per_class))

    def advance(self, t):
        self.busy += (self.n - len(self.free)) * (t - self.last)
        self.last = t

    def start(self, jid, keys, t, job):
        _arrival, _count, _classes, lease, duration, _p = job
        self.free.difference_update(keys)
        heapq.heappush(self.releases, (t + duration, jid, tuple(keys)))
        for k in keys:
            self.holder_of[k] = jid
            self.machines[k] = schedule.Machine(k, False, str(jid))
        self.holders[str(jid)] = schedule.Holder(str(jid), T0 + datetime.timedelta(seconds=t + lease), "u", len(keys))
        self.waits[jid] = t - job[0]

    def release_due(self, t):
        while self.releases and self.releases[0][0] <= t:
            _when, jid, keys = heapq.heappop(self.releases)
            self.free.update(keys)
            for k in keys:
                self.holder_of.pop(k, None)
                self.machines[k] = schedule.Machine(k, True)
            self.holders.pop(str(jid), None)


def replay(jobs, machines, policy):
    """Run the jobs through `policy` ("ours", "fifo", "first-fit"); return the figures."""
    lab = Lab(machines)
    matches = {}
    line, i, events, plans, planning = [], 0, 0, 0, 0.0
    rules = schedule.Rules(aging_seconds=60, depth=50)
    while i < len(jobs) or line:
        next_arrival = jobs[i][0] if i < len(jobs) else float("inf")
        next_release = lab.releases[0][0] if lab.releases else float("inf")
        t = (min(next_arrival, next_release) // TICK + 1) * TICK  # the next tick
        if min(next_arrival, next_release) == float("inf"):
            break  # nothing more will ever free machines: the rest can never run (none such here)
        lab.advance(t)
        lab.release_due(t)
        while i < len(jobs) and jobs[i][0] <= t:
            line.append(i)
            i += 1
        events += 1
        if policy == "ours":
            started = time.perf_counter()
            now = T0 + datetime.timedelta(seconds=t)
            requests = []
            for jid in line:
                arrival, count, classes, lease, _d, priority = jobs[jid]
                key = classes
                if key not in matches:
                    matches[key] = lab.matches(classes)
                requests.append(schedule.Request(str(jid), count, matches[key], priority,
                                                 T0 + datetime.timedelta(seconds=arrival), lease, "u",
                                                 T0 + datetime.timedelta(days=30)))
            result = schedule.plan(now, lab.machines, lab.holders, requests, rules)
            planning += time.perf_counter() - started
            plans += 1
            for rid, keys in result.grants():
                jid = int(rid)
                lab.start(jid, keys, t, jobs[jid])
                line.remove(jid)
        else:
            for jid in list(line):
                _arrival, count, classes, _lease, _d, _p = jobs[jid]
                fit = [k for c in classes for k in range(c * lab.per_class, (c + 1) * lab.per_class) if k in lab.free]
                if len(fit) >= count:
                    lab.start(jid, fit[:count], t, jobs[jid])
                    line.remove(jid)
                elif policy == "fifo":
                    break  # the head blocks the line
    end = max(lab.last, 1.0)
    small = [w for jid, w in lab.waits.items() if jobs[jid][1] <= 4]
    big = [w for jid, w in lab.waits.items() if jobs[jid][1] >= 8]
    waits = sorted(lab.waits.values())
    return {"policy": policy, "utilisation": lab.busy / (lab.n * end), "mean_wait": statistics.mean(waits),
            "p95_wait": waits[int(0.95 * (len(waits) - 1))], "small_wait": statistics.mean(small),
            "big_wait": statistics.mean(big) if big else 0.0, "max_wait": waits[-1], "events": events,
            "plans": plans, "plan_ms": 1000 * planning / plans if plans else 0.0, "granted": len(waits),
            "span_h": end / 3600}


def run(machines=10000, requests=50000, seed=1):
    """Replay the workload through the three rules; return their figures and the seconds each took."""
    jobs = workload(machines, requests, seed)
    found = []
    for policy in ("ours", "fifo", "first-fit"):
        started = time.perf_counter()
        figures = replay(jobs, machines, policy)
        figures["seconds"] = time.perf_counter() - started
        print(f"replay {policy}: {figures}", file=sys.stderr, flush=True)
        found.append(figures)
    return found


def report(found, machines, requests):
    ours = found[0]
    lines = [f"{machines:,} machines, {requests:,} requests over {ours['span_h']:.0f} simulated hours; "
             f"our rule planned {ours['plans']:,} times, {ours['plan_ms']:.2f} ms a plan on average "
             f"({ours['seconds']:.0f} s for the whole replay).", "",
             "| rule | machines busy | mean wait | p95 wait | mean wait, 1-4 machines | mean wait, 8+ machines | "
             "longest wait | replay seconds |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for f in found:
        lines.append(f"| {f['policy']} | {100 * f['utilisation']:.1f}% | {f['mean_wait'] / 60:.1f} min | "
                     f"{f['p95_wait'] / 60:.1f} min | {f['small_wait'] / 60:.1f} min | {f['big_wait'] / 60:.1f} min | "
                     f"{f['max_wait'] / 3600:.1f} h | {f['seconds']:.0f} |")
    by = {f["policy"]: f for f in found}
    lines += ["", f"Ratios, ours ÷ fifo: mean wait {ours['mean_wait'] / by['fifo']['mean_wait']:.2f}x, "
                  f"machines busy {ours['utilisation'] / by['fifo']['utilisation']:.2f}x; ours ÷ first-fit: "
                  f"longest wait {ours['max_wait'] / by['first-fit']['max_wait']:.2f}x, mean wait of 8+ machines "
                  f"{ours['big_wait'] / max(by['first-fit']['big_wait'], 1e-9):.2f}x."]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=10000)
    parser.add_argument("--requests", type=int, default=50000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(report(run(args.machines, args.requests, args.seed), args.machines, args.requests))
    return 0


if __name__ == "__main__":
    sys.exit(main())



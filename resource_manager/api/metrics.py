"""GET /metrics: Prometheus text format, counted per request here and read from the database per scrape.

Request figures (counters, histograms) are kept by prometheus_client. Under gunicorn
(gunicorn_conf.py sets PROMETHEUS_MULTIPROC_DIR) each worker writes its own files and a scrape
adds them all up, whichever worker answers; without that variable (./server.py, the tests'
servers) each app keeps its own registry. What the database holds (machines and reservations
by state, pools' addresses) is read at scrape time, by one collector registered beside the
files' collector, never summed per worker: one read per scrape at most, reused for
METRICS_CACHE_SECONDS by every worker (FiguresCache), since on FerretDB it is a pass over the fleet.

Beside them: rm_build_info{version=...}, and the process_* figures (CPU, memory, open files, start
time): of this process, or under gunicorn of the master and its live workers added up
(ServerProcesses). No *_created series.

METRICS_AUTH: "open" (default), or "reader" / "operator" / "admin": the least role of a signed-in
user that may scrape (require_role: HTTP Basic, and whatever else auth.py accepts).
"""

import fcntl
import json
import logging
import os
import re
import threading
import time

from flask import Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from pymongo.errors import PyMongoError

from .. import __version__
from ..core import figures
from ..core.figures import QUEUED
from ..schema import ROLES
from . import openapi
from .auth import require_role
from .config import SettingsError
from .db import database
from .errors import database_error_kind

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MASTER_ENV = "_RM_METRICS_DIR_OF"  # gunicorn_conf.py: the pid of the master that set the directory up
AUTH_CHOICES = ("open",) + ROLES
DEFAULT_CACHE_SECONDS = 10
CACHE_FILE = "rm_database_figures.json"  # beside prometheus_client's *.db files, which it alone reads
# Any other method (clients may send anything) is counted as OTHER: labels stay few.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
UNMATCHED = "unmatched"  # no route: a 404 or 405 before any view
DATABASE_ERRORS = ("unavailable", "query_rejected")
OUTCOMES = ("granted", "queued", "refused", "invalid", "error")
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_CONVERTER = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")


def route_label(rule):
    """Return a route's template as a label: /machines/<_id>, never the requested path."""
    return UNMATCHED if rule is None else _CONVERTER.sub(r"<\1>", rule.rule)


def reservation_outcome(response):
    """Return what a POST /reservations came to: granted, queued, refused (409), invalid (4xx) or error."""
    status = response.status_code
    if status < 300:
        body = response.get_json(silent=True) if response.is_json else None
        state = body.get("state") if isinstance(body, dict) else None
        return "queued" if state == QUEUED or status == 202 else "granted"
    if status == 409:
        return "refused"
    return "invalid" if status < 500 else "error"


class FiguresCache:
    """The database figures, read at most once per `seconds` by all the processes sharing `directory`.

    Under gunicorn (multiprocess) the figures are kept in a file of the metrics directory, so a
    scrape answered by any worker reuses the read of another; an exclusive lock on a file beside it
    makes one process read while the others wait for its result. Without a directory, in memory.
    """

    def __init__(self, seconds, directory=None):
        self.seconds = seconds
        self.path = os.path.join(directory, CACHE_FILE) if directory else None
        self._lock = threading.Lock()
        self._kept = None

    def _fresh(self, found):
        return found is not None and 0 <= time.time() - found["read_at"] < self.seconds

    def _load(self):
        try:
            with open(self.path, encoding="utf-8") as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None

    def _store(self, found):
        temporary = f"{self.path}.{os.getpid()}"
        with open(temporary, "w", encoding="utf-8") as fh:
            json.dump(found, fh)
        os.replace(temporary, self.path)

    def get(self, read):
        """Return (figures, age in seconds): the kept ones while fresh, else read() now."""
        with self._lock:  # the threads of this process
            found = self._kept if self.path is None else self._load()
            if not self._fresh(found):
                if self.path is None:
                    found = self._read(read)
                else:
                    with open(self.path + ".lock", "a") as lock:  # the other processes
                        fcntl.flock(lock, fcntl.LOCK_EX)
                        found = self._load()
                        if not self._fresh(found):
                            found = self._read(read)
                            self._store(found)
                self._kept = found
            return found, max(0.0, time.time() - found["read_at"])

    @staticmethod
    def _read(read):
        found = read()
        found["read_at"] = time.time()
        return found


class DatabaseCollector:
    """The gauges of what the database holds, read once per scrape (or per cache period)."""

    def __init__(self, cache):
        self.cache = cache

    def describe(self):
        return []  # the families vary with the data; registering must not read the database

    def _read(self):
        return self.cache.get(lambda: figures.read(database()))

    def collect(self):
        up = GaugeMetricFamily("rm_database_up", "1 when the last scrape could read the database, else 0")
        try:
            found, age = self._read()
        except PyMongoError as e:
            log.warning("metrics: cannot read the database: %s", e)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        machines = GaugeMetricFamily("rm_machines", "Machines by state", labels=["state"])
        for state, n in sorted(found["machines"].items()):
            machines.add_metric([state], n)
        yield machines
        reservations = GaugeMetricFamily("rm_reservations", "Reservations by state (every state stored)",
                                         labels=["state"])
        for state, n in sorted(found["reservations"].items()):
            reservations.add_metric([state], n)
        yield reservations
        yield GaugeMetricFamily("rm_reservation_queue_length", "Reservations waiting in the queue (state queued)",
                                value=found["reservations"].get(QUEUED, 0))
        addresses = GaugeMetricFamily("rm_pool_addresses", "Addresses of each pool, allocated or free "
                                      "(excluded addresses in neither)", labels=["pool", "kind", "state"])
        for pool in found["pools"]:
            for state in ("allocated", "free"):
                addresses.add_metric([pool["name"], pool["kind"], state], pool[state])
        yield addresses
        yield GaugeMetricFamily("rm_metrics_database_read_seconds", "How long the database figures took to read",
                                value=found["seconds"])
        yield GaugeMetricFamily("rm_metrics_database_age_seconds", "How old the database figures are "
                                "(at most METRICS_CACHE_SECONDS)", value=age)


class BuildInfo:
    """rm_build_info{version="..."} 1: which version answers (the usual Prometheus idiom)."""

    def describe(self):
        return []

    def collect(self):
        info = GaugeMetricFamily("rm_build_info", "The ResourceManager version serving, as a label", labels=["version"])
        info.add_metric([__version__], 1)
        yield info


class ServerProcesses:
    """process_* of the whole gunicorn server: its master and live workers, added up.

    prometheus_client's ProcessCollector reads one process; in multiprocess mode the worker that
    answers a scrape changes from one scrape to the next. So each process of the server is read by
    a ProcessCollector and the figures are added up: CPU seconds, memory and open files of all of
    them, the master's start time and file limit. A worker replaced takes its CPU seconds with it
    (a counter reset, which rate() takes in its stride). The master's pid is the one gunicorn_conf.py
    noted (_RM_METRICS_DIR_OF); without it, this process alone.
    """

    SUMMED = ("process_cpu_seconds_total", "process_virtual_memory_bytes", "process_resident_memory_bytes",
              "process_open_fds")

    def describe(self):
        return []

    def collect(self):
        master = int(os.environ.get(MASTER_ENV) or os.getpid())
        found = {}
        for pid in [master, *_children(master)]:
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
                if family.name not in found:
                    found[family.name] = (family, [])
                found[family.name][1].extend(s.value for s in family.samples)
        for name, (family, values) in found.items():
            value = sum(values) if family.name + ("_total" if family.type == "counter" else "") in self.SUMMED \
                else values[0]  # the master's (the first read)
            kind = CounterMetricFamily if family.type == "counter" else GaugeMetricFamily
            yield kind(name, family.documentation + " (the server's processes together)", value=value)


def _children(pid):
    # Linux names a process's children here (gunicorn forks its workers from its main thread).
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as fh:
            return [int(child) for child in fh.read().split()]
    except (OSError, ValueError):
        return [os.getpid()] if os.getpid() != pid else []


# Queue waits span seconds (a release hands the machine over) to a day (RM_QUEUE_MAX_WAIT_SECONDS).
QUEUE_WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400, float("inf"))


class Metrics:
    """The request figures of one app, and how to expose them with the database's."""

    def __init__(self, app):
        if (app.config.get("METRICS_AUTH") or "open") not in AUTH_CHOICES:
            raise SettingsError(f"METRICS_AUTH: not one of {', '.join(AUTH_CHOICES)}: {app.config['METRICS_AUTH']!r}")
        # The *_created series (a timestamp per counter and histogram child) double the series for nothing
        # a scrape needs: rate() and increase() work from the values. A switch of prometheus_client's, for
        # the process.
        disable_created_metrics()
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        # Multiprocess: the values live in the files, collected at scrape; else in this app's registry.
        self.registry = None if self.multiprocess else CollectorRegistry()
        registry = self.registry
        self.requests = Counter("rm_http_requests", "HTTP requests answered, by method, route template and status",
                                ["method", "route", "status"], registry=registry)
        self.duration = Histogram("rm_http_request_duration_seconds", "Time to answer a request, by route template",
                                  ["method", "route"], registry=registry)
        self.reservation = Histogram("rm_reservation_latency_seconds", "Time to answer POST /reservations, by "
                                     "outcome (granted, queued, refused, invalid, error)", ["outcome"],
                                     buckets=LATENCY_BUCKETS, registry=registry)
        self.queue_wait = Histogram("rm_queue_wait_seconds", "How long granted requests waited in the queue, "
                                    "from joining the line to their grant", buckets=QUEUE_WAIT_BUCKETS,
                                    registry=registry)
        self.database_errors = Counter("rm_database_errors", "Database errors answered by the error funnel: "
                                       "unavailable (503) or query_rejected (400)", ["kind"], registry=registry)
        self.unavailable = Counter("rm_http_unavailable", "503 answers, by cause: database (unreachable) or "
                                   "busy (retry: a lock, a request still in progress)", ["cause"], registry=registry)
        for kind in DATABASE_ERRORS:
            self.database_errors.labels(kind)
        for cause in ("database", "busy"):
            self.unavailable.labels(cause)
        for outcome in OUTCOMES:
            self.reservation.labels(outcome)
        seconds = float(app.config.get("METRICS_CACHE_SECONDS", DEFAULT_CACHE_SECONDS))
        self.database = DatabaseCollector(FiguresCache(seconds, os.environ.get(MULTIPROC_ENV)))
        self.build_info = BuildInfo()
        if registry is not None:
            registry.register(self.database)
            registry.register(self.build_info)
            ProcessCollector(registry=registry)
        self._routes = {}

    def waited(self, seconds):
        """Count the waits of requests granted from the queue (by whichever process granted them)."""
        for value in seconds:
            self.queue_wait.observe(max(0.0, value))

    def exposition(self):
        """Return the text of every figure."""
        registry = self.registry
        if registry is None:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            registry.register(self.database)
            registry.register(self.build_info)
            registry.register(ServerProcesses())
        return generate_latest(registry)

    def started(self):
        g.rm_metrics_started = time.perf_counter()

    def observe(self, response):
        started = g.pop("rm_metrics_started", None)
        if started is None:
            return response
        try:
            self._observe(response, time.perf_counter() - started)
        except Exception:  # a figure lost is better than an answer lost
            log.exception("metrics: could not count %s %s", request.method, request.path)
        return response

    def _observe(self, response, elapsed):
        rule = request.url_rule
        key = None if rule is None else rule.rule
        route = self._routes.get(key)
        if route is None:
            route = self._routes.setdefault(key, route_label(rule))
        method = request.method if request.method in METHODS else "OTHER"
        status = response.status_code
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(elapsed)
        kind = database_error_kind()
        if kind is not None:
            self.database_errors.labels(kind).inc()
        if status == 503:
            self.unavailable.labels("database" if kind == "unavailable" else "busy").inc()
        if request.endpoint == "reservations.create" and not request.args.get("dry_run"):
            self.reservation.labels(reservation_outcome(response)).observe(elapsed)


def metrics_view():
    """Answer every figure in Prometheus text format."""
    needed = current_app.config.get("METRICS_AUTH") or "open"
    if needed != "open":
        require_role(*ROLES[ROLES.index(needed):])
    body = current_app.extensions["rm_metrics"].exposition()
    return Response(body, content_type=CONTENT_TYPE_PLAIN_0_0_4)


_OPENAPI = {"/metrics": {"get": {
    "operationId": "metrics", "summary": "Figures for Prometheus (text format)", "tags": ["health"],
    "description": "Machines, reservations and pools' addresses as the database holds them; requests by "
                   "route template and status; latencies; database errors and 503s. Open unless "
                   "METRICS_AUTH names the least role that may read it.",
    "security": [{}, {"basicAuth": []}],
    "responses": {"200": {"description": "the figures", "content": {"text/plain": {"schema": {"type": "string"}}}},
                  **openapi.error_responses(401, 403)}}}}


def init_app(app):
    """Count every request and serve GET /metrics. Call it first: its after_request then runs last."""
    metrics = Metrics(app)
    app.extensions["rm_metrics"] = metrics
    app.before_request_funcs.setdefault(None, []).insert(0, metrics.started)
    app.after_request(metrics.observe)
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
    openapi.register(app, _OPENAPI)

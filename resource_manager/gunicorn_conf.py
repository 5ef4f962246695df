"""Gunicorn settings for production, from the environment (see supervisord.conf and docs/operations/production.md).

What matters against slow and heavy clients:
- worker_class gthread: the main thread of each worker waits (without a thread) for a new
  connection's first bytes and for kept-alive connections; a pool thread is taken only once a
  request arrives. Sync workers would give each slow client a whole process.
- The app reads a body within RM_BODY_TIMEOUT (10 s) and refuses a write without credentials
  before reading its body at all; gunicorn cannot bound how long headers take to arrive, so
  behind the internet put a buffering proxy in front (e.g. nginx with client_header_timeout,
  client_body_timeout and proxy_request_buffering on).
- limit_request_line / limit_request_fields / limit_request_field_size bound the headers;
  the app bounds the body (RM_MAX_CONTENT_LENGTH, 4 MiB: 413).
- timeout (RM_WORKER_TIMEOUT): a worker whose main loop stops answering for this long is restarted; keepalive:
  how long an idle connection is kept (in the main loop, not in a thread).
"""

import multiprocessing
import os
import shutil
import sys
import tempfile


def _timeout():
    # RM_TIMEOUT is the client's request timeout; gunicorn read it too until RM_WORKER_TIMEOUT.
    if "RM_WORKER_TIMEOUT" not in os.environ and "RM_TIMEOUT" in os.environ:
        print("gunicorn_conf: RM_TIMEOUT as the worker timeout is deprecated (it is the client's request "
              "timeout); set RM_WORKER_TIMEOUT", file=sys.stderr)
        return int(os.environ["RM_TIMEOUT"])
    return int(os.environ.get("RM_WORKER_TIMEOUT", "60"))


bind = os.environ.get("RM_BIND", "127.0.0.1:5000")
worker_class = "gthread"
workers = int(os.environ.get("RM_WORKERS", str(min(2 * multiprocessing.cpu_count() + 1, 9))))
threads = int(os.environ.get("RM_THREADS", "4"))
timeout = _timeout()
graceful_timeout = 30
keepalive = int(os.environ.get("RM_KEEPALIVE", "5"))
# Requests with longer lines or more headers are refused (400/431) before the app sees them.
limit_request_line = 8190
limit_request_fields = 64
limit_request_field_size = 8190
accesslog = os.environ.get("RM_ACCESS_LOG", "-")
# gunicorn's default line, and the answer's X-Request-Id (also the JSON lines' request_id, LOG_FORMAT=json).
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %({x-request-id}o)s'
errorlog = "-"
# Each worker builds its own app (and MongoClient) after the fork: pymongo clients are not fork-safe.
preload_app = False


# /metrics adds up the workers' figures (prometheus_client's multiprocess mode): each worker writes
# its own files in PROMETHEUS_MULTIPROC_DIR, read by whichever worker answers a scrape. A fresh
# private directory per server start (or the operator's, emptied), before any worker imports the app;
# a reload (HUP) keeps it, since the running workers' counts are there.
def _metrics_dir():
    if os.environ.get("_RM_METRICS_DIR_OF") == str(os.getpid()):
        return  # this master set it up already (the config is read again on HUP)
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path and not os.environ.get("_RM_METRICS_DIR_MADE"):  # the operator's (not another master's: USR2)
        os.makedirs(path, mode=0o700, exist_ok=True)
        for name in os.listdir(path):
            if name.endswith(".db") or name.startswith("rm_database_figures"):
                os.remove(os.path.join(path, name))
    else:
        _remove_orphans()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=f"rm-metrics-{os.getpid()}-")
        os.environ["_RM_METRICS_DIR_MADE"] = "1"
    os.environ["_RM_METRICS_DIR_OF"] = str(os.getpid())


def _remove_orphans():
    # The directories of servers that were killed (no on_exit): their master is gone.
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        pid = name.split("-")[2] if name.startswith("rm-metrics-") and name.count("-") >= 3 else ""
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


_metrics_dir()


def post_worker_init(worker):
    """Start the app's upkeep ticker as the worker starts serving: leases and waits end on a quiet server too."""
    upkeep = getattr(worker.wsgi, "extensions", {}).get("rm_upkeep")
    if upkeep is not None:
        upkeep.start()


def child_exit(server, worker):
    """A worker is gone: drop its live gauges' files (its counters stay in the sums)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics directory this server made for itself."""
    if os.environ.get("_RM_METRICS_DIR_MADE"):
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)

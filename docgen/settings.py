"""The configuration reference: the server's settings (api/config.py) and the other programs' variables."""

import json

from resource_manager.api import config, ratelimit
from resource_manager.clientlib import config as client_config
from resource_manager.core import constraints
from resource_manager.core.context import Policy

# What each server setting means. The name, its type and (where the code keeps it as a value) its
# default come from the code; a setting of api/config.SETTINGS missing here fails `docgen --check`.
MEANING = {
    "MONGO_URI": "The MongoDB to use (`MONGO_URI` is read too, as every MongoDB tool does). Required: "
                 "`make run` and `./server.py` start the embedded database when it is unset.",
    "MONGO_DBNAME": "The database name, unless the URI names one.",
    "MONGO_OPTIONS": "Extra `MongoClient` options, as a JSON object (the defaults fail fast when the database "
                     "is away: requests answer 503 instead of hanging).",
    "MONGO_WRITE_CONCERN": "A write concern, as a JSON object; empty: the URI's (e.g. `w=majority`), not Eve's "
                           "forced `w=1`.",
    "USERS_FILE": "The accounts file (see [Accounts](accounts.md)). Without one every write is refused.",
    "SECRET_KEY": "Signs the dashboard's sessions: a long random value, the same on every worker. Without it "
                  "the dashboard is read-only (sign-in disabled) and the service logs a warning.",
    "SESSION_COOKIE_SECURE": "Send the dashboard's cookies over HTTPS only: set it behind TLS.",
    "SESSION_COOKIE_SAMESITE": "The dashboard session cookie's `SameSite`.",
    "MAX_CONTENT_LENGTH": "The largest request body, in bytes (413 beyond).",
    "PAGINATION_DEFAULT": "Items per page when a request asks for `?page=` without `?max_results=` (a bare "
                          "`GET` of a collection lists everything).",
    "PAGINATION_LIMIT": "The most items one page may hold (`?max_results=`).",
    "BODY_TIMEOUT": "Seconds a request body may take to arrive (408 after, and the connection is closed).",
    "AUTH_CACHE_SECONDS": "How long the users file is cached, in seconds.",
    "AUTH_MAX_FAILURES": "Bad passwords (or token secrets) allowed per key within `AUTH_FAILURE_WINDOW` before "
                         "the throttle answers 429 (see [Security](../operations/security.md)).",
    "AUTH_FAILURE_WINDOW": "Seconds over which failures are counted.",
    "AUTH_BACKOFF_BASE": "The first throttle delay, in seconds; it doubles with each further failure.",
    "AUTH_BACKOFF_MAX": "The longest throttle delay, in seconds.",
    "TRUSTED_PROXIES": "Proxies in front whose `X-Forwarded-For` is trusted to give the client address.",
    "POOLS_MAX": "The most address pools (409 beyond), so that a listing's cost is bounded.",
    "POOL_MAX_EXCLUDE": "The most `exclude` entries per pool.",
    "ALLOCATION_MAX_COUNT": "The most addresses per allocation.",
    "RESERVATION_MAX_COUNT": "The most machines per reservation.",
    "IDEMPOTENCY_WAIT_SECONDS": "How long a repeated request (same Idempotency-Key) waits for the first to "
                                "settle before answering 503.",
    "SWEEP_GRACE_SECONDS": "The sweep repairs only half-done work older than this (seconds); requests give up "
                           "by themselves after half of it.",
    "PXE_TIMEOUT": "Seconds a machine may stay in `pxe` before the sweep marks it `pxe_failed` (0: never).",
    "QUEUE_MAX_WAIT_SECONDS": "The longest `wait_seconds` a reservation may ask to wait in the queue.",
    "QUEUE_TICK_SECONDS": "How often each server process's upkeep wakes: it ends reservations whose lease or "
                          "heartbeat window ran out, times waits out and, when one is due, runs a granting pass (0: no "
                          "ticker; then only the sweep ends leases, and passes run only on releases and machine "
                          "changes).",
    "QUEUE_PASS_SECONDS": "While requests wait, a granting pass runs this long after the last one even when "
                          "nothing ended (aging may have reordered the line); a pass reads every machine the line "
                          "matches. Ended leases and heartbeats, waits running out, releases and machine changes get "
                          "one at once.",
    "QUEUE_MAX_WAITING_PER_USER": "Requests one user may have waiting in line at once (429 beyond; 0: no limit).",
    "QUEUE_MAX_MACHINES_PER_USER": "Machines one user may hold (active reservations) plus ask for in line "
                                   "(0: no limit). A request for more than this is refused at once.",
    "QUEUE_AGING_SECONDS": "A waiting request's priority grows by one point per this many seconds waited, up to "
                           "100 (0: no aging).",
    "DEFAULT_LEASE_SECONDS": "The lease of a reservation made without `lease_seconds`: every reservation ends "
                             "by itself.",
    "MAX_LEASE_SECONDS": "No lease, and no extension, ends later than this many seconds from now.",
    "MAX_HEARTBEAT_SECONDS": "The longest `heartbeat_seconds` a reservation may ask for.",
    "WRITE_SERIALISATION": "`auto`: the write lock the storage needs (FerretDB over PostgreSQL: an advisory lock "
                           "every host sees; over SQLite: a `flock` of its file; MongoDB: none); `host`: a host-wide "
                           "`flock` in `WRITE_LOCK_DIR`, serialising one host only; `off`: none (unsafe on FerretDB). "
                           "`host` and `off` are for measurements (see [Scaling](../operations/scaling.md)).",
    "WRITE_LOCK_DIR": "Where `host` mode's lock files live (one per database): every process writing to one "
                      "database must see the same directory.",
    "POSTGRES_URL": "The PostgreSQL database FerretDB stores in (a libpq URL or `key=value` string): the write "
                    "lock is taken there, after proving it holds FerretDB's data. Unset: the embedded database's own "
                    "record; on FerretDB without either, writes are refused with 503. Unused on MongoDB (see "
                    "[Scaling](../operations/scaling.md)).",
    "SQLITE_DIR": "FerretDB over SQLite: the directory of its `.sqlite` files (unset: the embedded database's own "
                  "record).",
    "COUNT_CACHE_SECONDS": "How old a listing's `_meta.total` may be on a full page with more after it "
                           "(0: count every time).",
    "DASHBOARD_CACHE_SECONDS": "How old the dashboard's state counts and table order may get before a "
                               "background renewal (0: read on every page).",
    "DASHBOARD_SESSION_SECONDS": "How long a dashboard sign-in lasts, in seconds.",
    "LOG_FORMAT": "`json`: one JSON object per log line (`time`, `level`, `logger`, `message`, `request_id`, "
                  "`traceback`); under gunicorn the workers' access and error lines too.",
    "LONG_REQUEST_SLOTS": "Long-held requests (event streams, long polls) per server process; beyond, `503` with "
                          "`Retry-After` at once, so that they never take every thread.",
    "EVENTS_AUTH": "Who may listen to `GET /events`: `open`, or the least role of a signed-in user.",
    "EVENTS_STREAM_SECONDS": "A stream ends after this many seconds; clients reconnect with `Last-Event-ID` "
                             "(see [Events and webhooks](events.md)).",
    "EVENTS_RETENTION_SECONDS": "How long events are kept for `Last-Event-ID` and webhooks to catch up (whole "
                                "pages of 64 are dropped).",
    "WEBHOOK_ALLOW": "Where webhooks may be sent: a comma-separated allow-list of `public` (any globally routable "
                     "address), addresses or CIDRs, and host names (`*.example.com`); see "
                     "[Events and webhooks](events.md).",
    "WEBHOOK_TIMEOUT": "Seconds a receiver has to answer.",
    "WEBHOOK_RETRY_SECONDS": "The first wait before a failed delivery is retried, doubling.",
    "WEBHOOK_RETRY_MAX_SECONDS": "The longest wait between two attempts.",
    "WEBHOOK_MAX_ATTEMPTS": "Attempts before a delivery is `failed`.",
    "WEBHOOK_THREADS": "Deliveries each server process sends at once.",
    "TOKEN_MAX_DAYS": "The longest lifetime of an API token, in days (the default lifetime is 90 days, or this "
                      "if shorter).",
    "METRICS_AUTH": "Who may read `GET /metrics`: `open`, or the least role of a signed-in user.",
    "METRICS_CACHE_SECONDS": "How long the database figures of `/metrics` are reused, by all the workers "
                             "together (0: read on every scrape).",
}

# Defaults the code keeps as a value somewhere other than DEFAULTS, Policy, the rate limiter or BODIES:
# (module, attribute) read at generation, or the text to show for a default written inline.
DEFAULT_SOURCES = {
    "QUEUE_TICK_SECONDS": ("resource_manager.api.upkeep", "DEFAULT_TICK"),
    "QUEUE_PASS_SECONDS": ("resource_manager.api.upkeep", "DEFAULT_PASS"),
    "POSTGRES_URL": "none",
    "SQLITE_DIR": "none",
    "WEBHOOK_ALLOW": "`public`",
    "WEBHOOK_TIMEOUT": "`10`",
    "WEBHOOK_RETRY_SECONDS": "`10`",
    "WEBHOOK_RETRY_MAX_SECONDS": "`3600`",
    "WEBHOOK_MAX_ATTEMPTS": "`12`",
    "WEBHOOK_THREADS": "`4`",
    "POOLS_MAX": ("resource_manager.api.routes.pools", "DEFAULT_MAX_POOLS"),
    "DASHBOARD_CACHE_SECONDS": ("resource_manager.web.queries", "DEFAULT_CACHE_SECONDS"),
    "TOKEN_MAX_DAYS": ("resource_manager.api.routes.tokens", "DEFAULT_MAX_DAYS"),
    "SECRET_KEY": "none",
    "SESSION_COOKIE_SECURE": "`false`",
    "SESSION_COOKIE_SAMESITE": "`Lax`",
    "TRUSTED_PROXIES": "`0`",
    "WRITE_SERIALISATION": "`auto`",
    "WRITE_LOCK_DIR": "the system temp dir",
    "COUNT_CACHE_SECONDS": "`10`",
    "DASHBOARD_SESSION_SECONDS": "`28800` (8 h)",
}

TYPE_NAMES = {"str": "text", "int": "integer", "_number": "number", "_bool": "`true` or `false`",
              "_object": "JSON object", "_metrics_auth": "`open`, `reader`, `operator` or `admin`",
              "_log_format": "`text` or `json`"}

CLIENT_MEANING = {
    "endpoint": "The server's base URL.",
    "username": "The account's name (HTTP Basic).",
    "password": "Its password. Prefer the variable or the config file to the flag, which `ps` shows.",
    "token": "An API token (`rm_...`), sent instead of username and password whenever one is set, at any layer.",
    "timeout": "Seconds per request.",
    "max_retries": "Retries after a connection error or a 502/503/504 (0: never retry).",
    "retry_time": "No retry starts later than this many seconds after the first failure.",
    "retry_backoff": "The first wait between retries, doubling (at most 10 s, with jitter), unless Retry-After "
                     "says otherwise.",
}

OTHER_MEANING = {
    "RM_CONFIG": "the client's config file (else `$XDG_CONFIG_HOME/resource-manager/client.ini`)",
    "RM_BIND": "gunicorn: the address to serve on (`127.0.0.1:5000`)",
    "RM_WORKERS": "gunicorn: worker processes (2 × cores + 1, at most 9)",
    "RM_THREADS": "gunicorn: threads per worker (4)",
    "RM_WORKER_TIMEOUT": "gunicorn: seconds before a stuck worker is restarted (60; formerly `RM_TIMEOUT`)",
    "RM_KEEPALIVE": "gunicorn: seconds a kept-alive connection waits for its next request (5)",
    "RM_ACCESS_LOG": "gunicorn: where the access log goes (`-`: standard output)",
    "RM_SETTINGS_FILE": "a settings file (Python or JSON, upper-case keys) read before the environment",
    "RM_DATA_DIR": "`make run` / `./server.py`: where the embedded database and the development users file "
                   "live (`var`)",
    "RM_SWEEP_EVERY": "supervisord.conf: seconds between two runs of `rm-sweep --every` (60)",
    "RM_LOCALDB_PORT": "`python -m resource_manager.localdb`: its port (27018, not MongoDB's 27017)",
    "RM_LOCALDB_ENGINE": "the embedded database's storage: `postgresql` (default), or `sqlite` (the former "
                         "default, for comparisons)",
    "RM_LOCALDB_BUILD_DIR": "where the embedded database's Go build is kept (`resource_manager/localdb/.build`)",
    "RM_LOCALDB_LOG_LEVEL": "FerretDB's log level (`warn`)",
}


def _code(value):
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (dict, list)):
        return f"`{json.dumps(value, sort_keys=True)}`"
    return f"`{value}`"


def _probe(build, key, fields):
    """Return the default of `key` as `build` (config -> object) reads it, or None if it does not read it."""
    plain = build({})
    probed = build({key: 7777})
    for field in fields:
        if getattr(plain, field) != getattr(probed, field):
            return getattr(plain, field)
    return None


def default(key):
    """Return the Markdown text of a setting's default, read from the code where it keeps one."""
    if key in config.DEFAULTS:
        return _code(config.DEFAULTS[key])
    found = _probe(config.policy, key, [f.name for f in Policy.__dataclass_fields__.values()])
    if found is None:
        found = _probe(ratelimit.from_config, key, ("max_failures", "window", "base_delay", "max_delay"))
    if found is None:
        for body in constraints.BODIES.values():
            for rule in body.values():
                if rule.get("max_setting") == key:
                    found = rule.get("max", rule.get("maxlength"))
    if found is not None:
        return _code(found)
    source = DEFAULT_SOURCES.get(key)
    if isinstance(source, tuple):
        import importlib

        return _code(getattr(importlib.import_module(source[0]), source[1]))
    return source  # None: unknown (missing() says so)


def missing():
    """Return what lacks words: settings, client settings, variables (empty when complete)."""
    gaps = [f"setting {k}: no meaning in docgen/settings.py MEANING" for k in config.SETTINGS if k not in MEANING]
    gaps += [f"MEANING names {k}, which is no setting" for k in MEANING if k not in config.SETTINGS]
    gaps += [f"setting {k}: type {t.__name__} has no name in TYPE_NAMES" for k, t in config.SETTINGS.items()
             if t.__name__ not in TYPE_NAMES]
    gaps += [f"setting {k}: no default found in the code nor in docgen/settings.py DEFAULT_SOURCES"
             for k in config.SETTINGS if default(k) is None]
    gaps += [f"client setting {k}: no meaning in CLIENT_MEANING" for k in client_config.DEFAULTS
             if k not in CLIENT_MEANING]
    others = (config.GUNICORN_VARIABLES | config.OTHER_VARIABLES | config.CLIENT_VARIABLES) - set(
        client_config.ENV_NAMES.values())
    gaps += [f"variable {v}: no meaning in OTHER_MEANING" for v in sorted(others) if v not in OTHER_MEANING]
    return gaps


def server_table():
    rows = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    for key, kind in config.SETTINGS.items():
        rows.append(f"| `{config.ENV_PREFIX}{key}` | {TYPE_NAMES.get(kind.__name__, kind.__name__)} | "
                    f"{default(key) or '?'} | {MEANING.get(key, '')} |")
    return "\n".join(rows)


def client_table():
    rows = ["| setting | flag | environment | config file | default | meaning |", "|---|---|---|---|---|---|"]
    for key, value in client_config.DEFAULTS.items():
        shown = "none" if value == "" else f"`{value}`"
        rows.append(f"| {key.replace('_', ' ')} | `--{key.replace('_', '-')}` | `{client_config.ENV_NAMES[key]}` | "
                    f"`{key}` | {shown} | {CLIENT_MEANING.get(key, '')} |")
    return "\n".join(rows)


def other_table():
    rows = ["| variable | read by, and what for |", "|---|---|"]
    others = (config.GUNICORN_VARIABLES | config.OTHER_VARIABLES | config.CLIENT_VARIABLES) - set(
        client_config.ENV_NAMES.values())
    for name in sorted(others):
        rows.append(f"| `{name}` | {OTHER_MEANING.get(name, '')} |")
    return "\n".join(rows)

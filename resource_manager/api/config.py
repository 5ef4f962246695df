"""The server's settings: an allow-list of typed keys, in layers.

Layers, later ones winning: defaults < settings file (``RM_SETTINGS_FILE``) < ``RM_<KEY>``
environment variables < ``create_app(overrides)``. Only the keys of ``SETTINGS`` are read from
the environment, each parsed by its type; ``MONGO_URI`` alone is honoured too, as every MongoDB
tool does. The client's variables (``RM_ENDPOINT``, ``RM_PASSWORD``...), gunicorn's
(``RM_WORKERS``...) and the embedded database's (``RM_LOCALDB_*``) never reach the app's
config; any other ``RM_*`` variable is ignored with one warning per name.
"""

import json
import logging
import os
import runpy

from ..core.jsontext import loads_strict
from ..schema import ROLES

log = logging.getLogger(__name__)

DEFAULTS = {
    "MONGO_URI": None,
    "MONGO_DBNAME": "resource_manager",
    # Fail fast when the database is away: requests answer 503 instead of hanging.
    "MONGO_OPTIONS": {
        "connect": False,
        "tz_aware": True,
        "uuidRepresentation": "standard",
        "serverSelectionTimeoutMS": 3000,
        "connectTimeoutMS": 3000,
    },
    # Empty: the write concern is the one MONGO_URI gives (e.g. w=majority), not Eve's forced w=1.
    "MONGO_WRITE_CONCERN": {},
    "USERS_FILE": None,
    "MAX_CONTENT_LENGTH": 4 * 1024 * 1024,
    "PAGINATION_DEFAULT": 100,
    "PAGINATION_LIMIT": 1000,
    "AUTH_CACHE_SECONDS": 300,
    # A request body must arrive within this many seconds (408 after); see gunicorn_conf.py.
    "BODY_TIMEOUT": 10,
    # "text", or "json": one JSON object per log line (time, level, logger, message, request_id, traceback).
    "LOG_FORMAT": "text",
    # GET /metrics: "open", or the least role that may read it ("reader", "operator", "admin").
    "METRICS_AUTH": "open",
    # How long the database figures of /metrics are reused (by every worker): one read per period at most.
    "METRICS_CACHE_SECONDS": 10,
    # Every reservation ends by itself: made without a lease it gets DEFAULT_LEASE_SECONDS (4 h: a CI
    # job's working day, short enough that a forgotten reservation comes back the same day); no lease or
    # extension reaches further than MAX_LEASE_SECONDS from now (7 days: a week's investigation, renewed
    # by extending). See core/context.Policy.
    "DEFAULT_LEASE_SECONDS": 4 * 3600,
    "MAX_LEASE_SECONDS": 7 * 86400,
    "MAX_HEARTBEAT_SECONDS": 86400,
    # Long-held requests (event streams, long polls) per server process; beyond: 503 with Retry-After.
    "LONG_REQUEST_SLOTS": 2,
    # GET /events: "open", or the least role that may listen. A stream ends after this many seconds.
    "EVENTS_AUTH": "open",
    "EVENTS_STREAM_SECONDS": 60,
    # How long events are kept for Last-Event-ID and webhooks to catch up (whole pages of 64 are dropped).
    "EVENTS_RETENTION_SECONDS": 86400,
}

ENV_PREFIX = "RM_"


def _bool(text):
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _object(text):
    value = loads_strict(text)
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object: {text!r}")
    return value


def _number(text):
    try:
        return int(text)
    except ValueError:
        value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def _metrics_auth(text):
    value = text.strip().lower()
    if value not in ("open",) + ROLES:
        raise ValueError(f"not 'open' nor a role ({', '.join(ROLES)}): {text!r}")
    return value


def _log_format(text):
    value = text.strip().lower()
    if value not in ("text", "json"):
        raise ValueError(f"not 'text' or 'json': {text!r}")
    return value


# The server's settings that the environment may give (as RM_<KEY>), with the type each is read as.
SETTINGS = {
    "MONGO_URI": str,
    "MONGO_DBNAME": str,
    "MONGO_OPTIONS": _object,
    "MONGO_WRITE_CONCERN": _object,
    "USERS_FILE": str,
    "SECRET_KEY": str,
    "SESSION_COOKIE_SECURE": _bool,
    "SESSION_COOKIE_SAMESITE": str,
    "MAX_CONTENT_LENGTH": int,
    "PAGINATION_DEFAULT": int,
    "PAGINATION_LIMIT": int,
    "BODY_TIMEOUT": _number,
    "AUTH_CACHE_SECONDS": _number,
    "AUTH_MAX_FAILURES": int,
    "AUTH_FAILURE_WINDOW": _number,
    "AUTH_BACKOFF_BASE": _number,
    "AUTH_BACKOFF_MAX": _number,
    "TRUSTED_PROXIES": int,
    "POOLS_MAX": int,
    "POOL_MAX_EXCLUDE": int,
    "ALLOCATION_MAX_COUNT": int,
    "RESERVATION_MAX_COUNT": int,
    "IDEMPOTENCY_WAIT_SECONDS": _number,
    "SWEEP_GRACE_SECONDS": int,
    "PXE_TIMEOUT": _number,
    "QUEUE_MAX_WAIT_SECONDS": int,
    "QUEUE_TICK_SECONDS": _number,
    "QUEUE_PASS_SECONDS": _number,
    "QUEUE_MAX_WAITING_PER_USER": int,
    "QUEUE_MAX_MACHINES_PER_USER": int,
    "QUEUE_AGING_SECONDS": _number,
    "DEFAULT_LEASE_SECONDS": int,
    "MAX_LEASE_SECONDS": int,
    "MAX_HEARTBEAT_SECONDS": int,
    "WRITE_SERIALISATION": str,
    "WRITE_LOCK_DIR": str,
    "POSTGRES_URL": str,
    "SQLITE_DIR": str,
    "COUNT_CACHE_SECONDS": _number,
    "DASHBOARD_CACHE_SECONDS": _number,
    "DASHBOARD_SESSION_SECONDS": int,
    "LOG_FORMAT": _log_format,
    "TOKEN_MAX_DAYS": int,
    "METRICS_AUTH": _metrics_auth,
    "METRICS_CACHE_SECONDS": _number,
    # Events and webhooks (api/routes/events.py, api/routes/webhooks.py) and long requests (api/slots.py).
    "LONG_REQUEST_SLOTS": int,
    "EVENTS_AUTH": _metrics_auth,
    "EVENTS_STREAM_SECONDS": _number,
    "EVENTS_RETENTION_SECONDS": int,
    "WEBHOOK_ALLOW": str,
    "WEBHOOK_TIMEOUT": _number,
    "WEBHOOK_RETRY_SECONDS": _number,
    "WEBHOOK_RETRY_MAX_SECONDS": _number,
    "WEBHOOK_MAX_ATTEMPTS": int,
    "WEBHOOK_THREADS": int,
}

# RM_* variables that belong to other programs: read elsewhere, never the app's config.
CLIENT_VARIABLES = {"RM_ENDPOINT", "RM_USERNAME", "RM_PASSWORD", "RM_TIMEOUT", "RM_CONFIG",
                    "RM_MAX_RETRIES", "RM_RETRY_TIME", "RM_RETRY_BACKOFF", "RM_TOKEN"}
GUNICORN_VARIABLES = {"RM_BIND", "RM_WORKERS", "RM_THREADS", "RM_WORKER_TIMEOUT", "RM_KEEPALIVE",
                      "RM_ACCESS_LOG"}
OTHER_VARIABLES = {"RM_SETTINGS_FILE", "RM_DATA_DIR", "RM_SWEEP_EVERY", "RM_LOCALDB_PORT", "RM_LOCALDB_ENGINE",
                   "RM_LOCALDB_BUILD_DIR", "RM_LOCALDB_LOG_LEVEL"}

_warned = set()


class SettingsError(RuntimeError, ValueError):
    """A setting's value does not fit its type (a RuntimeError like a missing MONGO_URI: rm-sweep says it)."""


def _warn_once(name, message, *args):
    if name not in _warned:
        _warned.add(name)
        log.warning(message, *args)


def load_file(path):
    """Return the upper-case settings of a Python or JSON settings file."""
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as fh:
            data = loads_strict(fh.read())
    else:
        data = runpy.run_path(path)
    return {k: v for k, v in data.items() if k.isupper()}


def from_env(environ):
    """Return the allowed settings given as RM_* environment variables, as text (see ``parse``)."""
    found = {}
    if environ.get("MONGO_URI"):
        found["MONGO_URI"] = environ["MONGO_URI"]
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or len(name) == len(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX):]
        if key in SETTINGS:
            found[key] = value
        elif name not in CLIENT_VARIABLES | GUNICORN_VARIABLES | OTHER_VARIABLES:
            _warn_once(name, "%s is not a setting of the server; ignored (see docs/reference/configuration.md)", name)
    return found


def parse(settings):
    """Return ``settings`` (text from the environment) read by each key's type.

    Raises SettingsError (a ValueError) naming the variable whose value does not fit its type.
    """
    parsed = {}
    for key, text in settings.items():
        try:
            parsed[key] = SETTINGS[key](text)
        except ValueError as exc:
            raise SettingsError(f"{ENV_PREFIX}{key}: {exc}") from None
    return parsed


def load(overrides=None, environ=None):
    """Assemble the configuration from every layer, later layers winning."""
    environ = os.environ if environ is None else environ
    config = json.loads(json.dumps(DEFAULTS))
    settings_file = (overrides or {}).get("SETTINGS_FILE") or environ.get("RM_SETTINGS_FILE")
    if settings_file:
        config.update(load_file(settings_file))
    config.update(parse(from_env(environ)))
    config.update(overrides or {})
    if not config.get("MONGO_URI"):
        raise RuntimeError(
            "MONGO_URI is not set: point it at your MongoDB "
            "(or use `make run` / `./server.py`, which start the embedded database)"
        )
    return config


def policy(config):
    """Return the allocator's Policy (core/context.py) from the app's settings: core never reads them itself."""
    from ..core.context import Policy

    defaults = Policy()
    return Policy(
        grace_seconds=int(config.get("SWEEP_GRACE_SECONDS", defaults.grace_seconds)),
        idempotency_wait=float(config.get("IDEMPOTENCY_WAIT_SECONDS", defaults.idempotency_wait)),
        default_lease_seconds=int(config.get("DEFAULT_LEASE_SECONDS", defaults.default_lease_seconds)),
        max_lease_seconds=int(config.get("MAX_LEASE_SECONDS", defaults.max_lease_seconds)),
        pxe_timeout=float(config.get("PXE_TIMEOUT", defaults.pxe_timeout)),
        max_waiting_per_user=int(config.get("QUEUE_MAX_WAITING_PER_USER", defaults.max_waiting_per_user)),
        max_machines_per_user=int(config.get("QUEUE_MAX_MACHINES_PER_USER", defaults.max_machines_per_user)),
        aging_seconds=float(config.get("QUEUE_AGING_SECONDS", defaults.aging_seconds)),
    )

"""Configuration layers: defaults < settings file < RM_* env vars < overrides.

Every key is an Eve/Flask setting or one of ours (prefixed ``RM_``-less names
below). Environment variables are read as ``RM_<KEY>`` (``RM_MONGO_URI``);
``MONGO_URI`` alone is honoured too, as every MongoDB tool does. Values from
the environment are parsed as JSON when they parse, else kept as strings.
"""

import json
import os
import runpy

from ..core.jsontext import loads_strict

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
}

ENV_PREFIX = "RM_"


def _parse(value):
    try:
        return loads_strict(value)  # NaN or 1e999 stay text, and the setting that reads it refuses it
    except ValueError:
        return value


def load_file(path):
    """Return the upper-case settings of a Python or JSON settings file."""
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as fh:
            data = loads_strict(fh.read())
    else:
        data = runpy.run_path(path)
    return {k: v for k, v in data.items() if k.isupper()}


def from_env(environ):
    """Return the settings given as RM_* environment variables."""
    found = {}
    if environ.get("MONGO_URI"):
        found["MONGO_URI"] = environ["MONGO_URI"]
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            key = name[len(ENV_PREFIX):]
            found[key] = value if key.endswith(("_URI", "_FILE", "_DBNAME")) else _parse(value)
    return found


def load(overrides=None, environ=None):
    """Assemble the configuration from every layer, later layers winning."""
    environ = os.environ if environ is None else environ
    config = json.loads(json.dumps(DEFAULTS))
    settings_file = (overrides or {}).get("SETTINGS_FILE") or environ.get("RM_SETTINGS_FILE")
    if settings_file:
        config.update(load_file(settings_file))
    config.update(from_env(environ))
    config.update(overrides or {})
    if not config.get("MONGO_URI"):
        raise RuntimeError(
            "MONGO_URI is not set: point it at your MongoDB "
            "(or use `make run` / `./server.py`, which start the embedded database)"
        )
    return config

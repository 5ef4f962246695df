"""Client settings: argument > RM_* environment > config file > defaults."""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from typing import Any

DEFAULTS = {
    "endpoint": "http://127.0.0.1:5000",
    "username": "admin",
    "password": "admin",
    # An API token (rm_...): when one is set (at any layer) it is sent instead of username/password.
    "token": "",
    "timeout": "30",
    # Riding out restarts (retry.py): at most 5 retries, none starting later than 30 s
    # after the first failure, waits from 0.5 s doubling (or what Retry-After says).
    "max_retries": "5",
    "retry_time": "30",
    "retry_backoff": "0.5",
}

ENV_NAMES = {
    "endpoint": "RM_ENDPOINT",
    "username": "RM_USERNAME",
    "password": "RM_PASSWORD",
    "token": "RM_TOKEN",
    "timeout": "RM_TIMEOUT",
    "max_retries": "RM_MAX_RETRIES",
    "retry_time": "RM_RETRY_TIME",
    "retry_backoff": "RM_RETRY_BACKOFF",
}

# Numeric settings: (type, what the error message says a value must be).
NUMBERS: dict[str, tuple[type[int] | type[float], str]] = {
    "timeout": (float, "a number of seconds"),
    "max_retries": (int, "a whole number of retries (0: never retry)"),
    "retry_time": (float, "a number of seconds"),
    "retry_backoff": (float, "a number of seconds"),
}

SECTION = "client"


def config_dir(environ: Mapping[str, str] | None = None) -> str:
    """Return the directory of the client config file ($XDG_CONFIG_HOME/resource-manager)."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "resource-manager")


def config_path(environ: Mapping[str, str] | None = None, directory: str | None = None) -> str:
    """Return the config file in use: $RM_CONFIG, else client.ini in the config directory."""
    environ = os.environ if environ is None else environ
    if environ.get("RM_CONFIG"):
        return environ["RM_CONFIG"]
    return os.path.join(directory or config_dir(environ), "client.ini")


def read_file(path: str) -> dict[str, str]:
    """Return the [client] settings of an INI file ({} when it does not exist).

    Raises ValueError when the file cannot be parsed.
    """
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except (OSError, UnicodeDecodeError, configparser.Error) as e:
        raise ValueError(f"cannot read config file {path}: {e}") from e
    if not parser.has_section(SECTION):
        return {}
    return {k: v for k, v in parser.items(SECTION) if k in DEFAULTS}


def resolve(arguments: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None,
            path: str | None = None, directory: str | None = None) -> dict[str, Any]:
    """Return endpoint, username, password, token, timeout and the retry settings, each from its first layer.

    Raises ValueError naming the setting when a number is not one, or is negative.
    """
    environ = os.environ if environ is None else environ
    layers: list[Mapping[str, Any]] = [
        {k: v for k, v in (arguments or {}).items() if v is not None},
        {k: environ[name] for k, name in ENV_NAMES.items() if environ.get(name)},
        read_file(path or config_path(environ, directory)),
        DEFAULTS,
    ]
    settings: dict[str, Any] = {}
    for key in DEFAULTS:
        settings[key] = next(layer[key] for layer in layers if key in layer)
    settings["endpoint"] = str(settings["endpoint"]).rstrip("/")
    for key, (kind, what) in NUMBERS.items():
        try:
            settings[key] = kind(settings[key])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{key} must be {what}, not {settings[key]!r}") from e
        if settings[key] < 0 or settings[key] != settings[key]:  # negative or NaN
            raise ValueError(f"{key} must be {what}, not {settings[key]!r}")
    return settings

"""The server's settings: a typed allow-list; the client's and gunicorn's variables stay theirs."""

import logging
import os
import subprocess
import sys

import pytest

from resource_manager.api import config

GUNICORN_CONF = os.path.join(os.path.dirname(config.__file__), os.pardir, "gunicorn_conf.py")


def test_only_the_servers_settings_come_from_the_environment(caplog):
    environ = {"MONGO_URI": "mongodb://db/", "RM_PAGINATION_LIMIT": "50", "RM_PASSWORD": "s3cret",
               "RM_USERNAME": "ci", "RM_TIMEOUT": "3", "RM_WORKERS": "2", "RM_DATA_DIR": "var"}
    with caplog.at_level(logging.WARNING, logger=config.__name__):
        loaded = config.load(environ=environ)
    assert loaded["PAGINATION_LIMIT"] == 50
    for key in ("PASSWORD", "USERNAME", "TIMEOUT", "WORKERS", "DATA_DIR"):
        assert key not in loaded
    assert caplog.records == []  # known names of the other programs: no warning


def test_an_unknown_variable_is_ignored_with_one_warning(caplog):
    environ = {"MONGO_URI": "mongodb://db/", "RM_PAGINATION_LIMT": "50"}
    with caplog.at_level(logging.WARNING, logger=config.__name__):
        first = config.load(environ=environ)
        second = config.load(environ=environ)
    assert "PAGINATION_LIMT" not in first and "PAGINATION_LIMT" not in second
    assert [r.getMessage() for r in caplog.records] == [
        "RM_PAGINATION_LIMT is not a setting of the server; ignored (see docs/reference/configuration.md)"]


def test_values_are_read_by_their_type():
    environ = {"MONGO_URI": "mongodb://db/", "RM_SECRET_KEY": "123", "RM_SESSION_COOKIE_SECURE": "true",
               "RM_BODY_TIMEOUT": "2.5", "RM_TRUSTED_PROXIES": "1", "RM_MONGO_DBNAME": "42",
               "RM_MONGO_OPTIONS": '{"connect": false}'}
    loaded = config.load(environ=environ)
    assert loaded["SECRET_KEY"] == "123"
    assert loaded["SESSION_COOKIE_SECURE"] is True
    assert loaded["BODY_TIMEOUT"] == 2.5
    assert loaded["TRUSTED_PROXIES"] == 1
    assert loaded["MONGO_DBNAME"] == "42"
    assert loaded["MONGO_OPTIONS"] == {"connect": False}


@pytest.mark.parametrize("name, text", [("RM_AUTH_MAX_FAILURES", "five"), ("RM_BODY_TIMEOUT", "NaN"),
                                        ("RM_SESSION_COOKIE_SECURE", "maybe"), ("RM_MONGO_OPTIONS", "[1]")])
def test_a_value_that_does_not_fit_its_type_stops_the_start_naming_it(name, text):
    with pytest.raises(ValueError, match=f"^{name}: "):
        config.load(environ={"MONGO_URI": "mongodb://db/", name: text})


def test_overrides_win_over_the_environment():
    loaded = config.load({"PAGINATION_LIMIT": 7}, environ={"MONGO_URI": "mongodb://db/", "RM_PAGINATION_LIMIT": "50"})
    assert loaded["PAGINATION_LIMIT"] == 7


def _gunicorn_timeout(**environ):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RM_")}
    code = f"import runpy; print(runpy.run_path({GUNICORN_CONF!r})['timeout'])"
    done = subprocess.run([sys.executable, "-c", code], env={**env, **environ}, capture_output=True, text=True,
                          check=True)
    return int(done.stdout), done.stderr


def test_gunicorn_reads_its_worker_timeout_apart_from_the_clients_timeout():
    assert _gunicorn_timeout() == (60, "")
    assert _gunicorn_timeout(RM_WORKER_TIMEOUT="90") == (90, "")
    assert _gunicorn_timeout(RM_WORKER_TIMEOUT="90", RM_TIMEOUT="5") == (90, "")
    timeout, warning = _gunicorn_timeout(RM_TIMEOUT="45")  # the former name still works, with a warning
    assert timeout == 45
    assert "RM_TIMEOUT as the worker timeout is deprecated" in warning and "RM_WORKER_TIMEOUT" in warning


def test_rm_sweep_says_a_bad_setting_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RM_")}
    env.update(MONGO_URI="mongodb://127.0.0.1:9/", RM_SWEEP_GRACE_SECONDS="soon")
    done = subprocess.run([sys.executable, "-m", "resource_manager.admin.sweep"], env=env, capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == "rm-sweep: RM_SWEEP_GRACE_SECONDS: invalid literal for int() with base 10: 'soon'\n"

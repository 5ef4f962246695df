"""GET /metrics: the figures after a known sequence of requests, the setting, and gunicorn's workers adding up."""

import os
import signal

import pytest
import requests
from prometheus_client import ProcessCollector
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from resource_manager import __version__
from resource_manager.api.config import SettingsError
from resource_manager.app import create_app
from resource_manager.schema import MACHINE_STATES

from .deployed import Gunicorn
from .support import ADMIN, OPERATOR, READER, LiveServer

OFFLINE = {"MONGO_URI": "mongodb://127.0.0.1:9/", "MONGO_OPTIONS": {"connect": False, "serverSelectionTimeoutMS": 1}}


@pytest.fixture
def overrides(overrides):
    return dict(overrides, METRICS_CACHE_SECONDS=0)  # each scrape reads the database afresh


def scrape(session_or_url, **kwargs):
    """Return {(sample name, frozenset of labels): value} of one GET /metrics."""
    if isinstance(session_or_url, str):
        response = requests.get(session_or_url + "/metrics", timeout=30, **kwargs)
    else:
        response = session_or_url.get("/metrics", **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(figures, name, **labels):
    return figures.get((name, frozenset(labels.items())))


def requests_of(figures, method, route, status):
    return value(figures, "rm_http_requests_total", method=method, route=route, status=str(status))


@pytest.mark.own_server  # counts every answer since its server started
def test_the_figures_match_the_database_after_a_known_sequence(server, operator, admin, anon):
    for i, state in enumerate(["idle", "idle", "idle", "pxe", "needs_repair"]):
        assert operator.post("/machines", json={"hostname": f"m{i}", "state": state}).status_code == 201
    first = operator.post("/reservations", json={"count": 2, "owner": "ci"})
    assert first.status_code == 201
    assert operator.post("/reservations", json={"count": 5, "owner": "ci"}).status_code == 409
    assert operator.delete(f"/reservations/{first.json()['_id']}").status_code == 200
    assert operator.post("/reservations", json={"count": 1, "owner": "ci"}).status_code == 201
    assert operator.post("/reservations?dry_run=1", json={"count": 1, "owner": "ci"}).status_code == 200
    assert operator.post("/address-pools", json={"name": "lab", "kind": "private", "cidr": "10.9.0.0/28",
                                                 "exclude": ["10.9.0.14"]}).status_code == 201
    assert operator.post("/address-pools/lab/allocate", json={"count": 3, "owner": "ci"}).status_code == 201
    assert operator.post("/address-pools", json={"name": "empty", "kind": "public",
                                                 "cidr": "192.0.2.0/29"}).status_code == 201
    assert anon.get("/machines/nowhere").status_code == 404
    assert anon.get("/no/such/route").status_code == 404
    assert anon.request("BREW", "/machines").status_code == 405

    figures = scrape(anon)

    db = server.db
    for state in MACHINE_STATES:
        assert value(figures, "rm_machines", state=state) == db.machines.count_documents({"state": state})
    assert [value(figures, "rm_machines", state=s) for s in ("idle", "in_use", "pxe", "needs_repair")] == [2, 1, 1, 1]
    for state in ("active", "released", "pending"):
        assert value(figures, "rm_reservations", state=state) == db.reservations.count_documents({"state": state})
    assert [value(figures, "rm_reservations", state=s) for s in ("active", "released")] == [1, 1]
    assert value(figures, "rm_reservation_queue_length") == 0
    lab = anon.get("/address-pools/lab").json()["utilisation"]
    assert lab == {"size": 12, "allocated": 3, "free": 9}  # 16 less network, gateway, broadcast, the one excluded
    assert value(figures, "rm_pool_addresses", pool="lab", kind="private", state="allocated") == 3
    assert value(figures, "rm_pool_addresses", pool="lab", kind="private", state="free") == 9
    empty = anon.get("/address-pools/empty").json()["utilisation"]
    assert value(figures, "rm_pool_addresses", pool="empty", kind="public", state="free") == empty["free"] == 5
    assert value(figures, "rm_database_up") == 1

    assert requests_of(figures, "POST", "/machines", 201) == 5
    assert requests_of(figures, "POST", "/reservations", 201) == 2
    assert requests_of(figures, "POST", "/reservations", 409) == 1
    assert requests_of(figures, "POST", "/reservations", 200) == 1
    assert requests_of(figures, "DELETE", "/reservations/<rid>", 200) == 1
    assert requests_of(figures, "POST", "/address-pools/<name>/allocate", 201) == 1
    assert requests_of(figures, "GET", "/machines/<_id>", 404) == 1
    assert requests_of(figures, "GET", "unmatched", 404) == 1
    assert requests_of(figures, "OTHER", "unmatched", 405) == 1
    assert requests_of(figures, "GET", "/metrics", 200) is None  # counted once answered
    assert value(figures, "rm_http_request_duration_seconds_count", method="POST", route="/reservations") == 4
    # The dry run is no reservation: not in the latency histogram.
    assert value(figures, "rm_reservation_latency_seconds_count", outcome="granted") == 2
    assert value(figures, "rm_reservation_latency_seconds_count", outcome="refused") == 1
    assert value(figures, "rm_reservation_latency_seconds_bucket", outcome="granted", le="+Inf") == 2
    assert value(figures, "rm_database_errors_total", kind="unavailable") == 0
    assert value(figures, "rm_http_unavailable_total", cause="database") == 0

    again = scrape(anon)
    assert requests_of(again, "GET", "/metrics", 200) == 1
    assert not any(dict(labels).get("route", "").startswith("/machines/m") for _name, labels in again)


def test_database_errors_and_503s_are_counted_and_the_scrape_still_answers():
    live = LiveServer(dict(OFFLINE, METRICS_CACHE_SECONDS=0))
    try:
        with live.session() as anon:
            assert anon.get("/machines").status_code == 503
            assert anon.get("/reservations").status_code == 503
            figures = scrape(anon)
    finally:
        live.stop()
    assert value(figures, "rm_database_up") == 0
    assert value(figures, "rm_database_errors_total", kind="unavailable") == 2
    assert value(figures, "rm_http_unavailable_total", cause="database") == 2
    assert value(figures, "rm_http_unavailable_total", cause="busy") == 0
    assert requests_of(figures, "GET", "/reservations", 503) == 1
    assert value(figures, "rm_machines", state="idle") is None  # not known: no figure rather than a wrong 0


@pytest.mark.own_server  # counts every answer since its server started
def test_a_query_the_database_rejects_is_counted(server, operator, anon):
    assert operator.post("/machines", json={"hostname": "m1", "state": "idle"}).status_code == 201
    response = anon.get("/machines", params={"where": '{"hostname": {"$in": 5}}'})
    assert response.json()["_error"]["message"].startswith("the database rejected")
    assert value(scrape(anon), "rm_database_errors_total", kind="query_rejected") == 1


def test_metrics_auth_names_the_least_role(overrides):
    live = LiveServer(dict(overrides, METRICS_AUTH="operator"))
    try:
        with live.session() as anon, live.session(READER) as reader, live.session(OPERATOR) as operator, \
                live.session(ADMIN) as admin:
            assert anon.get("/metrics").status_code == 401
            assert reader.get("/metrics").status_code == 403
            assert scrape(operator)
            assert scrape(admin)
    finally:
        live.stop()


def test_one_process_reuses_its_database_figures_for_metrics_cache_seconds(overrides):
    live = LiveServer(dict(overrides, METRICS_CACHE_SECONDS=600))
    try:
        with live.session(OPERATOR) as operator:
            assert operator.post("/machines", json={"hostname": "m1", "state": "idle"}).status_code == 201
            first = scrape(operator)
            assert operator.post("/machines", json={"hostname": "m2", "state": "idle"}).status_code == 201
            second = scrape(operator)
    finally:
        live.stop()
    assert value(first, "rm_machines", state="idle") == value(second, "rm_machines", state="idle") == 1
    assert value(second, "rm_metrics_database_age_seconds") > 0
    assert requests_of(second, "POST", "/machines", 201) == 2  # the request figures are never cached


def test_metrics_auth_is_checked_at_start():
    with pytest.raises(SettingsError, match="RM_METRICS_AUTH"):
        create_app(OFFLINE, environ={"RM_METRICS_AUTH": "everyone"})
    with pytest.raises(SettingsError, match="METRICS_AUTH"):
        create_app(dict(OFFLINE, METRICS_AUTH="everyone"))


def test_under_gunicorn_the_workers_add_up_and_share_one_database_read(localdb, dbname, users_file, tmp_path):
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"left by an earlier run: wiped at start")
    server = Gunicorn(localdb.uri, dbname, users_file, str(tmp_path / "gunicorn.log"), workers=2, threads=2,
                      env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "RM_METRICS_CACHE_SECONDS": "600"})
    with server:
        first = server.wait_for_workers(2)
        for i in range(3):
            assert requests.post(server.url + "/machines", json={"hostname": f"g{i}", "state": "idle"},
                                 auth=OPERATOR, timeout=10).status_code == 201
        for _ in range(10):
            assert requests.get(server.url + "/machines/nowhere", timeout=10).status_code == 404
        read = scrape(server.url)  # reads the database; every worker reuses it for 600 s
        assert value(read, "rm_machines", state="idle") == 3
        assert requests.post(server.url + "/machines", json={"hostname": "g3", "state": "idle"},
                             auth=OPERATOR, timeout=10).status_code == 201
        # The workers that counted so far go; their counts stay in the sums of the ones after them.
        for pid in first:
            os.kill(pid, signal.SIGTERM)
        server.wait_for_workers(2, exclude=first)
        for _ in range(10):
            assert requests.get(server.url + "/machines/nowhere", timeout=10).status_code == 404
        # Each scrape on a connection of its own, answered by either worker: the same sums.
        scrapes = [scrape(server.url, headers={"Connection": "close"}) for _ in range(4)]
        master = {f.name + ("_total" if f.type == "counter" else ""): f.samples[0].value
                  for f in ProcessCollector(pid=lambda: server.process.pid, registry=None).collect()}
    for figures in scrapes:
        # The server's processes together: more memory than the master alone; the master's start time.
        assert value(figures, "process_resident_memory_bytes") > 2 * master["process_resident_memory_bytes"]
        assert value(figures, "process_start_time_seconds") == master["process_start_time_seconds"]
        assert value(figures, "process_cpu_seconds_total") > 0 and value(figures, "process_open_fds") > 0
        assert value(figures, "rm_build_info", version=__version__) == 1
        assert not [name for name, _labels in figures if name.endswith("_created")]
        assert requests_of(figures, "GET", "/machines/<_id>", 404) == 20
        assert requests_of(figures, "POST", "/machines", 201) == 4
        # The one read of the first scrape, neither summed per worker nor read again.
        assert value(figures, "rm_machines", state="idle") == 3
        assert value(figures, "rm_metrics_database_read_seconds") == value(read, "rm_metrics_database_read_seconds")
    pids = {name.rsplit("_", 1)[1].split(".")[0] for name in os.listdir(metrics_dir) if name.startswith("counter_")}
    assert len(pids) >= 3 and "1" not in pids
    per_file = [MultiProcessCollector.merge([str(metrics_dir / f"counter_{pid}.db")]) for pid in pids]
    assert sum(1 for families in per_file for f in families for s in f.samples
               if s.labels.get("route") == "/machines/<_id>" and s.value) >= 2


def test_process_figures_and_the_version_without_created_series(server, anon):
    response = anon.get("/metrics")
    figures = scrape(anon)
    assert value(figures, "rm_build_info", version=__version__) == 1
    assert value(figures, "process_resident_memory_bytes") > 10 * 2**20
    assert value(figures, "process_cpu_seconds_total") > 0 and value(figures, "process_open_fds") > 0
    # A *_created timestamp beside every counter and histogram child doubled the series for nothing.
    assert "_created" not in response.text

"""The dashboard's cache belongs to its app (web/queries.py DashboardCache), reset through the app."""

from resource_manager.web import queries

from .support import LiveServer
from .test_web import seed
from .test_web_cache import card, dashboard


def test_each_app_has_its_own_cache_and_clearing_one_leaves_the_other(overrides, admin):
    first = LiveServer(dict(overrides, DASHBOARD_CACHE_SECONDS=3600))
    second = LiveServer(dict(overrides, DASHBOARD_CACHE_SECONDS=3600))  # the same database
    try:
        assert queries.cache_of(first.app) is not queries.cache_of(second.app)
        seed(first.session(admin.auth), [{"hostname": f"m{i}", "state": "idle"} for i in range(2)])
        assert card(dashboard(first.url), "idle") == 2
        assert card(dashboard(second.url), "idle") == 2
        assert first.session(admin.auth).post("/machines", json={"hostname": "m9", "state": "idle"}).status_code == 201
        assert card(dashboard(first.url), "idle") == 2 and card(dashboard(second.url), "idle") == 2  # both cached

        queries.cache_of(first.app).clear()  # what LiveServer.reset does between tests
        assert card(dashboard(first.url), "idle") == 3
        assert card(dashboard(second.url), "idle") == 2
    finally:
        first.stop()
        second.stop()


def test_a_stopped_apps_threads_are_gone(overrides, admin):
    live = LiveServer(dict(overrides, DASHBOARD_CACHE_SECONDS=0))
    try:
        seed(live.session(admin.auth), [{"hostname": "a", "state": "idle"}])
        assert card(dashboard(live.url), "idle") == 1
        pool = queries.cache_of(live.app).pool()
    finally:
        live.stop()
    assert pool._shutdown  # LiveServer.stop closed the app's cache, and its threads with it

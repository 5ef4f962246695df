"""The dashboard's cached counts and order: how old they may be, said on the page; rows always current.

The counts by state and the first names in order are kept beside the data (core/counts.py): the
view with no filter (or only a state) is current. A filter those do not answer (here a tag) is
what the cache serves.
"""

import re
import time

import requests

from .support import LiveServer
from .test_web import HTML, rows, seed, signed_in, token


def card(page, state):
    return int(re.search(rf'data-state="{state}">.*?class="fs-3 fw-semibold count">(\d+)<', page, re.S).group(1))


def state_in_row(page, hostname):
    row = re.search(rf'<tr data-hostname="{re.escape(hostname)}">(.*?)</tr>', page, re.S).group(1)
    return re.search(r"(pxe_failed|pxe|idle|in_use|needs_repair)", row).group(1)


def dashboard(url, **params):
    response = requests.get(url + "/", params=params, headers=HTML, timeout=30)
    assert response.status_code == 200
    return response.text


RACK = {"rack": "r1"}


def test_counts_and_order_are_served_from_the_cache_but_rows_are_current(overrides, admin):
    live = LiveServer(dict(overrides, DASHBOARD_CACHE_SECONDS=3600))
    try:
        seed(live.session(admin.auth), [{"hostname": f"m{i}", "state": "idle", "tags": RACK} for i in range(3)])
        page = dashboard(live.url, tag="rack")
        assert card(page, "idle") == 3 and rows(page) == ["m0", "m1", "m2"]
        assert re.search(r'id="counts-age">Counts and the table\'s order as of\s+0 s ago', page)

        api = live.session(admin.auth)
        assert api.write("PATCH", "/machines/m1", json={"state": "needs_repair"}).status_code == 200
        assert api.post("/machines", json={"hostname": "m3", "state": "idle", "tags": RACK}).status_code == 201
        page = dashboard(live.url, tag="rack")
        assert card(page, "idle") == 3 and card(page, "needs_repair") == 0  # counted before the change
        assert rows(page) == ["m0", "m1", "m2"]  # m3 is not in the cached order yet
        assert state_in_row(page, "m1") == "needs_repair"  # but every row is read now
        # Without a filter the counts and the first names are kept with each write: current, no age.
        page = dashboard(live.url)
        assert card(page, "idle") == 3 and card(page, "needs_repair") == 1 and rows(page) == ["m0", "m1", "m2", "m3"]
        assert "Counts and the table's order as of" not in page
        assert '<p id="counts-age" hidden></p>' in page  # where a live update puts the note, should one come

        # A change made from the dashboard itself forgets this process's counts.
        browser = signed_in(live, "admin")
        machine_page = browser.get(live.url + "/ui/machines/m2", timeout=30).text
        response = browser.post(live.url + "/ui/machines/m2/state", timeout=30,
                                data={"state": "needs_repair", "csrf_token": token(machine_page)})
        assert response.status_code == 200
        page = dashboard(live.url, tag="rack")
        assert card(page, "idle") == 2 and card(page, "needs_repair") == 2 and rows(page) == ["m0", "m1", "m2", "m3"]
    finally:
        live.stop()


def test_old_counts_are_renewed_in_the_background(overrides, admin):
    live = LiveServer(dict(overrides, DASHBOARD_CACHE_SECONDS=0.05))
    try:
        api = live.session(admin.auth)
        assert api.post("/machines", json={"hostname": "a", "state": "idle", "tags": RACK}).status_code == 201
        assert card(dashboard(live.url, tag="rack"), "idle") == 1
        assert api.post("/machines", json={"hostname": "b", "state": "idle", "tags": RACK}).status_code == 201
        deadline = time.monotonic() + 20
        while card(page := dashboard(live.url, tag="rack"), "idle") != 2:  # each old answer starts one renewal
            assert time.monotonic() < deadline, "the counts were never renewed"
        assert rows(page) == ["a", "b"]
    finally:
        live.stop()


def test_without_a_cache_every_page_counts_now_and_says_nothing_about_age(overrides, admin):
    live = LiveServer(dict(overrides, DASHBOARD_CACHE_SECONDS=0))
    try:
        api = live.session(admin.auth)
        assert api.post("/machines", json={"hostname": "a", "state": "idle"}).status_code == 201
        assert card(dashboard(live.url), "idle") == 1
        assert api.post("/machines", json={"hostname": "b", "state": "pxe"}).status_code == 201
        page = dashboard(live.url, state="pxe")
        assert card(page, "idle") == 1 and card(page, "pxe") == 1 and rows(page) == ["b"]
        assert "Counts and the table's order as of" not in page
    finally:
        live.stop()

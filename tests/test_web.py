"""The dashboard over plain HTTP: headers, negotiation, sign-in, CSRF, roles, filters and pages."""

import html
import re

import pytest
import requests

from resource_manager.api import auth

from .support import ADMIN, PASSWORDS, LiveServer

HTML = {"Accept": "text/html,application/xhtml+xml"}


def token(page):
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def signed_in(server, username, password=None):
    """Return a requests session signed in to the dashboard through the login form."""
    browser = requests.Session()
    browser.headers.update(HTML)
    login = browser.get(server.url + "/ui/login", timeout=30)
    response = browser.post(server.url + "/ui/login", timeout=30, data={
        "username": username, "password": password or PASSWORDS[username], "csrf_token": token(login.text)})
    assert response.status_code == 200 and f"Signed in as {username}" in response.text
    return browser


def rows(page):
    return re.findall(r'<tr data-hostname="([^"]+)"', page)


def seed(admin, docs):
    response = admin.post("/machines", json=docs)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("path", ["/", "/ui/machines/m0", "/docs", "/ui/login"])
def test_pages_send_security_headers_and_no_external_origin(server, admin, path):
    seed(admin, [{"hostname": "m0", "state": "idle"}])
    response = requests.get(server.url + path, headers=HTML, timeout=30)
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert "http" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert not re.search(r'(src|href)="(https?:)?//', response.text)


def test_assets_are_served_locally(server):
    page = requests.get(server.url + "/", headers=HTML, timeout=30).text
    for asset in re.findall(r'(?:src|href)="(/[^"]+\.(?:css|js))"', page):
        assert requests.get(server.url + asset, timeout=30).status_code == 200, asset
    assert "/bootstrap/static/css/bootstrap.min.css" in page


def test_root_is_the_dashboard_for_browsers_and_json_for_api_clients(anon, server):
    assert "child" in anon.get("/").json()["_links"]
    response = requests.get(server.url + "/", headers=HTML, timeout=30)
    assert response.headers["Content-Type"].startswith("text/html")
    assert "Accept" in response.headers["Vary"]


def test_signed_in_pages_are_not_cached(server):
    browser = signed_in(server, "reader")
    assert browser.get(server.url + "/", timeout=30).headers["Cache-Control"] == "private, no-store"


def test_anonymous_reads_set_no_cookie(server):
    response = requests.get(server.url + "/", headers=HTML, timeout=30)
    assert "Set-Cookie" not in response.headers


def test_session_cookie_is_httponly_and_samesite(server):
    response = requests.get(server.url + "/ui/login", timeout=30)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_wrong_password_does_not_sign_in(server):
    browser = requests.Session()
    login = browser.get(server.url + "/ui/login", timeout=30)
    response = browser.post(server.url + "/ui/login", timeout=30, data={
        "username": "operator", "password": "nope", "csrf_token": token(login.text)})
    assert response.status_code == 401
    assert "Wrong user name or password" in response.text
    assert "Sign out" not in browser.get(server.url + "/", headers=HTML, timeout=30).text


def test_login_refuses_to_redirect_off_site(server):
    browser = requests.Session()
    login = browser.get(server.url + "/ui/login", timeout=30)
    response = browser.post(server.url + "/ui/login", timeout=30, allow_redirects=False, data={
        "username": "operator", "password": PASSWORDS["operator"], "csrf_token": token(login.text),
        "next": "//evil.example/x"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/"


def test_an_action_without_the_csrf_token_is_refused_and_changes_nothing(server, admin):
    seed(admin, [{"hostname": "m0", "state": "idle"}])
    browser = signed_in(server, "operator")
    response = browser.post(server.url + "/ui/machines/m0/state", data={"state": "needs_repair"}, timeout=30)
    assert response.status_code == 400
    assert "CSRF" in response.text
    assert admin.get("/machines/m0").json()["state"] == "idle"


def test_a_reader_cannot_act_even_with_a_valid_token(server, admin):
    seed(admin, [{"hostname": "m0", "state": "idle"}])
    browser = signed_in(server, "reader")
    page = browser.get(server.url + "/ui/machines/m0", timeout=30).text
    assert "Mark needs repair" not in page
    response = browser.post(server.url + "/ui/machines/m0/state", timeout=30,
                            data={"state": "needs_repair", "csrf_token": token(page)})
    assert response.status_code == 403
    assert admin.get("/machines/m0").json()["state"] == "idle"


def test_marking_a_machine_keeps_etags_honest(server, admin):
    seed(admin, [{"hostname": "m0", "state": "in_use", "owner": "ci", "job_id": "j1"}])
    before = admin.get("/machines/m0").json()
    browser = signed_in(server, "operator")
    page = browser.get(server.url + "/ui/machines/m0", timeout=30).text
    response = browser.post(server.url + "/ui/machines/m0/state", timeout=30,
                            data={"state": "idle", "csrf_token": token(page)})
    assert response.status_code == 200 and "m0 is now idle." in response.text
    after = admin.get("/machines/m0").json()
    assert (after["state"], after["owner"], after["job_id"]) == ("idle", None, None)
    assert after["_etag"] != before["_etag"] and after["_updated"] >= before["_updated"]
    stale = admin.patch("/machines/m0", json={"owner": "x"}, headers={"If-Match": before["_etag"]})
    assert stale.status_code == 412


def test_setting_an_unknown_state_is_refused(server, admin):
    seed(admin, [{"hostname": "m0", "state": "idle"}])
    browser = signed_in(server, "operator")
    page = browser.get(server.url + "/ui/machines/m0", timeout=30).text
    response = browser.post(server.url + "/ui/machines/m0/state", timeout=30,
                            data={"state": "in_use", "csrf_token": token(page)})
    assert response.status_code == 400
    assert admin.get("/machines/m0").json()["state"] == "idle"


def test_unknown_machine_page_is_a_404_page(server):
    response = requests.get(server.url + "/ui/machines/nope", timeout=30)
    assert response.status_code == 404
    assert "no machine 'nope'" in html.unescape(response.text)


def test_pages_sorting_and_clamping(server, admin):
    seed(admin, [{"hostname": f"h{i:03d}", "state": "idle"} for i in range(120)])
    get = lambda query: requests.get(server.url + "/" + query, headers=HTML, timeout=30).text  # noqa: E731
    assert rows(get("")) == [f"h{i:03d}" for i in range(50)]
    assert rows(get("?page=3")) == [f"h{i:03d}" for i in range(100, 120)]
    assert rows(get("?page=99")) == rows(get("?page=3"))
    assert rows(get("?sort=-hostname&per_page=25")) == [f"h{i:03d}" for i in range(119, 94, -1)]
    assert "Showing 101–120 of <strong>120</strong>" in get("?page=3")


def test_filters_are_safe_and_typed(server, admin):
    seed(admin, [
        {"hostname": "a.lab", "state": "idle", "tags": {"memory": 17179869184, "rack": "a15"}},
        {"hostname": "axlab", "state": "idle", "tags": {"memory": 8589934592}},
        {"hostname": "b.lab", "state": "in_use", "owner": "ci", "job_id": "j1", "tags": {"rack": "a15"}},
    ])
    get = lambda query: rows(requests.get(server.url + "/" + query, headers=HTML, timeout=30).text)  # noqa: E731
    assert get("?q=.") == ["a.lab", "b.lab"]  # a literal dot, not a regex
    assert get("?q=(") == []
    assert get("?tag=memory=17179869184") == ["a.lab"]
    assert get("?tag=rack") == ["a.lab", "b.lab"]
    assert get("?owner=ci&job=j1") == ["b.lab"]
    assert get("?state=bogus") == ["a.lab", "axlab", "b.lab"]
    page = requests.get(server.url + "/?tag=$where=1", headers=HTML, timeout=30)
    assert page.status_code == 200 and page.text.count("ignored tag filter") == 1


def test_without_a_secret_key_the_dashboard_is_read_only(overrides, admin):
    settings = dict(overrides)
    del settings["SECRET_KEY"]
    live = LiveServer(settings)
    try:
        assert requests.get(live.url + "/", headers=HTML, timeout=30).status_code == 200
        login = requests.get(live.url + "/ui/login", timeout=30)
        assert login.status_code == 503 and "Sign-in is disabled" in login.text
    finally:
        live.stop()


def test_changing_a_password_or_removing_the_account_signs_its_sessions_out(overrides, tmp_path):
    users = str(tmp_path / "users.json")
    auth.set_user(users, "operator", PASSWORDS["operator"], "operator")
    live = LiveServer(dict(overrides, USERS_FILE=users))
    try:
        browser = signed_in(live, "operator")
        auth.set_user(users, "operator", "a-new-password", "operator")
        assert "Sign out" not in browser.get(live.url + "/", timeout=30).text
        browser = signed_in(live, "operator", "a-new-password")
        accounts = auth.read_users(users)
        accounts["operator"]["role"] = "reader"  # the role alone, same password hash
        auth.write_users(users, accounts)
        assert "reader</span>" in browser.get(live.url + "/", timeout=30).text
        auth.remove_user(users, "operator")
        assert "Sign out" not in browser.get(live.url + "/", timeout=30).text
    finally:
        live.stop()


NATURAL = ["n0", "n1", "n2", "n3", "n10", "n20", "n100"]


@pytest.mark.parametrize("cache_seconds", [0, 10], ids=["read-now", "cached"])
def test_hostnames_are_sorted_naturally(overrides, cache_seconds):
    # n2 before n10, as people count; the database's own sort puts n10 first.
    live = LiveServer(dict(overrides, DASHBOARD_CACHE_SECONDS=cache_seconds))
    try:
        with live.session(ADMIN) as admin:
            seed(admin, [{"hostname": h, "state": "idle", "owner": "o" + h[1:]} for h in ("n10", "n2", "n1", "n100",
                                                                                         "n0", "n20", "n3")])
        get = lambda query: requests.get(live.url + "/" + query, headers=HTML, timeout=30).text  # noqa: E731
        assert rows(get("")) == NATURAL
        assert rows(get("?sort=-hostname")) == NATURAL[::-1]
        assert rows(get("?sort=owner")) == NATURAL  # other text columns too (owners o0 ... o100)
        assert rows(get("?per_page=25&page=1&sort=-owner")) == NATURAL[::-1]
    finally:
        live.stop()

"""The dashboard and /docs in a real browser (headless chromium): counts, filters, actions, roles."""

import contextlib

from .browser import new_page, screenshot, sign_in
from .support import PASSWORDS

FLEET = (
    [{"hostname": f"idle-{i}.lab", "state": "idle", "tags": {"rack": "a15", "memory": 17179869184}} for i in range(4)]
    + [{"hostname": f"busy-{i}.lab", "state": "in_use", "owner": "ci", "job_id": f"build-{i % 2}",
        "tags": {"rack": "b02"}} for i in range(3)]
    + [{"hostname": "pxe-0.lab", "state": "pxe"}, {"hostname": "broken-0.lab", "state": "pxe_failed"},
       {"hostname": "repair-0.lab", "state": "needs_repair", "tags": {"rack": "a15"}}]
)


def seed(admin):
    response = admin.post("/machines", json=FLEET)
    assert response.status_code == 201, response.text


def counts(page):
    return {card.get_attribute("data-state"): int(card.locator(".count").inner_text())
            for card in page.locator("#state-counts a[data-state]").all()}


def hostnames(page):
    return [row.get_attribute("data-hostname") for row in page.locator("#machines-table tbody tr").all()]


def test_dashboard_shows_the_counts_of_seeded_machines(page, admin):
    seed(admin)
    page.goto("/")
    assert counts(page) == {"idle": 4, "in_use": 3, "pxe": 1, "pxe_failed": 1, "needs_repair": 1}
    assert page.locator("#total-machines").inner_text() == "10"
    assert len(hostnames(page)) == 10
    screenshot(page, "dashboard.png")


def test_filtering_by_state_tag_and_search(page, admin):
    seed(admin)
    page.goto("/")
    page.select_option("#state", "idle")
    page.fill("#tag", "rack=a15")
    page.click("#filters button[type=submit]")
    page.wait_for_url("**state=idle**")
    assert sorted(hostnames(page)) == [f"idle-{i}.lab" for i in range(4)]
    assert "4 matching" in page.locator("#showing").inner_text()
    # The cards count the machines matching the other filters, by state.
    assert counts(page) == {"idle": 4, "in_use": 0, "pxe": 0, "pxe_failed": 0, "needs_repair": 1}

    page.fill("#q", "idle-2")
    page.click("#filters button[type=submit]")
    page.wait_for_url("**q=idle-2**")
    assert hostnames(page) == ["idle-2.lab"]

    page.goto("/?job=build-1")
    assert hostnames(page) == ["busy-1.lab"]
    page.goto("/")
    page.click("#state-counts a[data-state=in_use]")
    page.wait_for_url("**state=in_use**")
    assert sorted(hostnames(page)) == ["busy-0.lab", "busy-1.lab", "busy-2.lab"]


def test_sorting_by_clicking_a_column_header(page, admin):
    seed(admin)
    page.goto("/")
    first = hostnames(page)
    assert first == sorted(first)
    page.click("#machines-table thead >> text=Hostname")
    page.wait_for_url("**sort=-hostname**")
    assert hostnames(page) == sorted(first, reverse=True)


def test_operator_marks_a_machine_needs_repair_and_the_counts_change(page, admin):
    seed(admin)
    sign_in(page, "operator", PASSWORDS["operator"])
    page.goto("/ui/machines/idle-0.lab")
    page.click("#actions >> text=Mark needs repair")
    page.wait_for_selector("text=idle-0.lab is now needs_repair.")
    page.goto("/")
    assert counts(page)["idle"] == 3
    assert counts(page)["needs_repair"] == 2
    stored = admin.get("/machines/idle-0.lab").json()
    assert stored["state"] == "needs_repair"

    page.goto("/ui/machines/busy-0.lab")
    page.click("#actions >> text=Mark idle")
    page.wait_for_selector("text=busy-0.lab is now idle.")
    stored = admin.get("/machines/busy-0.lab").json()
    assert (stored["state"], stored["owner"], stored["job_id"]) == ("idle", None, None)


def test_a_read_only_user_sees_no_action_buttons(page, admin):
    seed(admin)
    sign_in(page, "reader", PASSWORDS["reader"])
    page.goto("/ui/machines/idle-0.lab")
    assert page.locator("#fields").is_visible()
    assert page.locator("#actions").count() == 0
    assert page.locator("form[action*='/state'], form[action*='/release']").count() == 0
    page.goto("/")
    assert page.locator("main button:has-text('Free')").count() == 0


def test_anonymous_visitors_read_without_javascript(browser, server, admin):
    seed(admin)
    with contextlib.contextmanager(new_page)(browser, server, java_script_enabled=False) as tab:
        tab.goto("/?state=pxe_failed")
        assert [r.get_attribute("data-hostname") for r in tab.locator("#machines-table tbody tr").all()] == [
            "broken-0.lab"]
        tab.click("text=broken-0.lab")
        assert tab.locator("h1").inner_text() == "broken-0.lab"
        assert tab.locator("#actions").count() == 0


def test_the_dashboard_fits_a_phone_screen(browser, server, admin):
    seed(admin)
    phone = {"viewport": {"width": 375, "height": 740}, "is_mobile": True}
    with contextlib.contextmanager(new_page)(browser, server, **phone) as tab:
        tab.goto("/")
        overflow = tab.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        assert tab.locator("#state-counts").is_visible()
        screenshot(tab, "dashboard-phone.png")


def test_the_docs_page_renders_the_endpoints(page):
    page.goto("/docs")
    text = page.locator("main").inner_text()
    for path in ("/machines", "/machines/{hostname}", "/public-addresses/{address}", "/healthz"):
        assert path in text
    page.click("#updateMachine summary")
    assert page.locator("#updateMachine >> text=If-Match").first.is_visible()
    screenshot(page, "docs.png")

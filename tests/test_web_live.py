"""The dashboard follows the event stream in a real browser (Debian's chromium): changes made elsewhere appear."""

from playwright.sync_api import expect

from .browser import new_page, screenshot, sign_in
from .support import PASSWORDS


def seed(admin, count=3):
    response = admin.post("/machines", json=[{"hostname": f"live-{i}.lab", "state": "idle"} for i in range(count)])
    assert response.status_code == 201, response.text


def row_state(page, hostname):
    return page.locator(f'#machines-table tr[data-hostname="{hostname}"] .badge')


def test_the_dashboard_changes_when_a_machine_is_reserved_from_another_client(page, admin, operator):
    seed(admin)
    page.goto("/")
    expect(page.locator("#live")).to_have_attribute("data-state", "open")
    page.evaluate("window.notReloaded = true")
    expect(page.locator("#reservations")).to_contain_text("No active reservations")
    held = operator.post("/reservations", json={"count": 1, "job_id": "live-42"})
    assert held.status_code == 201, held.text
    host = held.json()["hostnames"][0]
    expect(row_state(page, host)).to_have_text("in_use")
    expect(page.locator("#reservations")).to_contain_text("live-42")
    others = [f"live-{i}.lab" for i in range(3) if f"live-{i}.lab" != host]
    assert all(row_state(page, other).inner_text() == "idle" for other in others)
    assert page.evaluate("window.notReloaded") is True  # changed in place, not reloaded
    screenshot(page, "dashboard-live.png")
    # Released elsewhere: back to idle, the reservation gone.
    assert operator.delete(f"/reservations/{held.json()['_id']}").status_code == 200
    expect(row_state(page, host)).to_have_text("idle")
    expect(page.locator("#reservations")).to_contain_text("No active reservations")


def test_the_queue_panel_follows_requests_waiting_in_line(page, admin, operator):
    seed(admin, 1)
    held = operator.post("/reservations", json={"count": 1}).json()
    page.goto("/")
    expect(page.locator("#live")).to_have_attribute("data-state", "open")
    expect(page.locator("#queue-length")).to_have_text("0")
    waiting = operator.post("/reservations", json={"count": 1, "job_id": "in-line", "wait_seconds": 300})
    assert waiting.status_code == 202
    expect(page.locator("#queue-length")).to_have_text("1")
    expect(page.locator("#queue-table")).to_contain_text("in-line")
    operator.delete(f"/reservations/{held['_id']}")  # the waiting request is granted
    expect(page.locator("#queue-length")).to_have_text("0")
    expect(page.locator("#reservations")).to_contain_text("in-line")


def test_signed_in_actions_still_work_on_the_refreshed_parts(browser, server, admin, operator):
    seed(admin, 2)
    for page in new_page(browser, server):
        sign_in(page, "admin", PASSWORDS["admin"])
        expect(page.locator("#live")).to_have_attribute("data-state", "open")
        held = operator.post("/reservations", json={"count": 1, "job_id": "free-me"}).json()
        expect(page.locator("#reservations")).to_contain_text("free-me")
        page.on("dialog", lambda dialog: dialog.accept())
        page.locator(f'#reservations tr[data-reservation="{held["_id"]}"] button').click()  # a swapped-in form
        expect(page.locator(".alert-success")).to_contain_text("Freed")
        assert server.db.reservations.find_one({"_id": held["_id"]})["state"] == "released"


def test_without_javascript_the_dashboard_still_works(browser, server, admin, operator):
    seed(admin, 2)
    for page in new_page(browser, server, java_script_enabled=False):
        page.goto("/")
        expect(page.locator("#live")).to_be_hidden()
        held = operator.post("/reservations", json={"count": 1, "job_id": "no-js"}).json()
        page.reload()
        expect(row_state(page, held["hostnames"][0])).to_have_text("in_use")
        expect(page.locator("#reservations")).to_contain_text("no-js")

"""The dashboard's reservations, pools and history, in a real browser and over HTTP."""

import requests

from .browser import screenshot, sign_in
from .support import PASSWORDS

FLEET = ([{"hostname": f"node-{i:02d}.qa1.lab", "state": "idle",
           "tags": {"rack": "a15", "memory": 17179869184, "cpucores": 8}} for i in range(5)]
         + [{"hostname": "node-05.qa1.lab", "state": "pxe_failed", "tags": {"rack": "b02"}}])


def seed(admin, operator):
    assert admin.post("/machines", json=FLEET).status_code == 201
    response = operator.post("/reservations", json={"count": 2, "owner": "ci", "job_id": "build-42",
                                                    "lease_seconds": 3600})
    assert response.status_code == 201, response.text
    pool = operator.post("/address-pools", json={"name": "lab-net", "cidr": "10.0.0.0/29", "kind": "private"})
    assert pool.status_code == 201, pool.text
    assert operator.post("/address-pools/lab-net/allocate", json={"owner": "ci", "count": 3}).status_code == 201
    return response.json()


def counts(page):
    return {card.get_attribute("data-state"): int(card.locator(".count").inner_text())
            for card in page.locator("#state-counts a[data-state]").all()}


def test_dashboard_shows_reservations_and_pool_utilisation(page, admin, operator):
    reservation = seed(admin, operator)
    page.goto("/")
    row = page.locator(f"#reservations tr[data-reservation='{reservation['_id']}']")
    assert "ci" in row.inner_text() and "build-42" in row.inner_text()
    assert row.locator("time").count() == 1  # the lease's expiry
    pool = page.locator("#pools li[data-pool='lab-net']")
    assert "3 / 5 used (60%)" in pool.inner_text()
    assert pool.locator(".progress-bar.util-60").count() == 1
    assert counts(page)["in_use"] == 2


def test_operator_frees_a_reservation_and_the_counts_change(page, admin, operator):
    reservation = seed(admin, operator)
    sign_in(page, "operator", PASSWORDS["operator"])
    page.goto("/")
    assert counts(page) == {"idle": 3, "in_use": 2, "pxe": 0, "pxe_failed": 1, "needs_repair": 0}
    screenshot(page, "dashboard-signed-in.png")
    page.on("dialog", lambda dialog: dialog.accept())
    page.click(f"#reservations tr[data-reservation='{reservation['_id']}'] button:has-text('Free')")
    page.wait_for_selector("text=Freed")
    assert counts(page) == {"idle": 5, "in_use": 0, "pxe": 0, "pxe_failed": 1, "needs_repair": 0}
    assert "No active reservations" in page.locator("#reservations").inner_text()
    assert operator.get(f"/reservations/{reservation['_id']}").json()["state"] == "released"


def test_machine_page_shows_reservation_history_and_free(page, admin, operator):
    reservation = seed(admin, operator)
    host = reservation["hostnames"][0]
    sign_in(page, "operator", PASSWORDS["operator"])
    page.goto(f"/ui/machines/{host}")
    assert "build-42" in page.locator("#reservation").inner_text()
    assert "reserve" in page.locator("#history").inner_text()
    assert page.locator("#actions >> text=Mark idle").count() == 0  # reserved: Free instead
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#actions >> text=Free")
    page.wait_for_selector("text=Freed")
    page.goto(f"/ui/machines/{host}")
    assert "Not reserved" in page.locator("#reservation").inner_text()
    history = page.locator("#history").inner_text()
    assert "release" in history and "operator" in history


def test_a_reader_sees_reservations_without_free_buttons(page, admin, operator):
    seed(admin, operator)
    sign_in(page, "reader", PASSWORDS["reader"])
    page.goto("/")
    assert page.locator("#reservations tr[data-reservation]").count() == 1
    assert page.locator("button:has-text('Free')").count() == 0


def test_marking_a_reserved_machine_is_refused(server, admin, operator):
    from .test_web import signed_in, token

    reservation = seed(admin, operator)
    host = reservation["hostnames"][0]
    browser = signed_in(server, "operator")
    page = browser.get(f"{server.url}/ui/machines/{host}", timeout=30).text
    response = browser.post(f"{server.url}/ui/machines/{host}/state", timeout=30,
                            data={"state": "needs_repair", "csrf_token": token(page)})
    assert response.status_code == 200 and "is reserved: free its reservation first" in response.text
    assert admin.get(f"/machines/{host}").json()["state"] == "in_use"


def test_allocation_responses_match_the_documented_schemas(server, admin, operator, anon):
    from .test_openapi import matches

    spec = requests.get(server.url + "/openapi.json", timeout=30).json()
    reservation = seed(admin, operator)
    matches(anon.get(f"/reservations/{reservation['_id']}"), spec, "Reservation")
    matches(anon.get("/reservations?state=active"), spec, "ReservationList")
    matches(anon.get("/address-pools/lab-net"), spec, "Pool")
    matches(anon.get(f"/machines/{reservation['hostnames'][0]}/history"), spec, "History")
    matches(operator.post(f"/reservations/{reservation['_id']}/extend", json={"lease_seconds": 60}), spec,
            "Reservation")
    matches(operator.post("/reservations?dry_run=1", json={"count": 1, "owner": "x"}), spec, "DryRun")
    matches(anon.get("/address-pools"), spec, "PoolList")
    allocated = operator.post("/address-pools/lab-net/allocate", json={"owner": "web", "count": 1})
    assert allocated.status_code == 201
    matches(allocated, spec, "Allocation")
    matches(operator.delete(f"/reservations/{reservation['_id']}"), spec, "Released")
    matches(operator.post("/reservations/sweep"), spec, "Sweep")
    refused = operator.post("/reservations", json={"count": 99, "owner": "x"})
    assert refused.status_code == 409
    matches(refused, spec, "Error")


def test_the_queue_panel_shows_who_waits_for_what_and_history_shows_the_grant(page, admin, operator):
    assert admin.post("/machines", json=FLEET).status_code == 201
    hog = operator.post("/reservations", json={"count": 5, "owner": "hog", "job_id": "hog-1"}).json()
    waits = [{"count": 2, "owner": "ci", "job_id": "build-43", "wait_seconds": 600, "where": {"tags.rack": "a15"}},
             {"count": 1, "owner": "qa", "job_id": "build-44", "wait_seconds": 600}]
    queued = []
    for body in waits:
        response = operator.post("/reservations", json=body)
        assert response.status_code == 202, response.text
        queued.append(response.json())
    sign_in(page, "operator", PASSWORDS["operator"])
    page.goto("/")
    assert page.locator("#queue-length").inner_text() == "2"
    rows = page.locator("#queue-table tbody tr")
    assert [rows.nth(i).get_attribute("data-reservation") for i in range(2)] == [r["_id"] for r in queued]
    first, second = rows.nth(0).inner_text(), rows.nth(1).inner_text()
    assert first.split("\t")[:4] == ["1", "ci (operator)", "build-43", "2"] and '"tags.rack": "a15"' in first
    assert second.split("\t")[:4] == ["2", "qa (operator)", "build-44", "1"] and "any idle machine" in second
    assert rows.nth(0).locator("time").count() == 3  # waiting since, starts by (the hog's lease end), gives up at
    assert rows.nth(0).locator(".eta time").get_attribute("datetime").startswith(hog["expires"][:19])
    assert page.locator("#queue-events tr[data-event='queued']").count() == 2
    screenshot(page, "dashboard-queue.png")

    # An operator cancels the second request from the panel.
    page.on("dialog", lambda dialog: dialog.accept())
    page.click(f"#queue-table tr[data-reservation='{queued[1]['_id']}'] button:has-text('Cancel')")
    page.wait_for_selector("text=it no longer waits in line")
    assert operator.get(f"/reservations/{queued[1]['_id']}").json()["state"] == "cancelled"
    assert page.locator("#queue-table tbody tr").count() == 1

    assert operator.delete(f"/reservations/{hog['_id']}").status_code == 200
    granted = operator.get(f"/reservations/{queued[0]['_id']}").json()
    if granted["state"] != "active":  # the grant is under way: wait for its change of state
        granted = operator.get(f"/reservations/{queued[0]['_id']}?wait=10").json()
    assert granted["state"] == "active", granted
    page.goto("/")
    assert "Nobody is waiting" in page.locator("#queue").inner_text()
    page.goto(f"/ui/machines/{granted['hostnames'][0]}")
    events = page.locator(f"#history tr:has-text('reservation {granted['_id']}')")
    assert [events.nth(i).get_attribute("data-action") for i in range(events.count())] == ["granted", "queued"]

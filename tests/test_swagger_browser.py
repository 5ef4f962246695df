"""Swagger UI on /docs/swagger in a real browser (headless chromium): it renders every operation, "Try it out"
works with HTTP Basic and with an API token, nothing is loaded from another origin, and the
Content-Security-Policy is never violated.
"""

from .browser import screenshot
from .support import PASSWORDS

# Filled by the page itself: every CSP violation the browser reports, from the first script on.
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.cspViolations.push({directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample});
});
"""


def watch(page, server):
    """Record every request the page makes; refuse (and record) any to another origin."""
    requested, refused = [], []
    page.on("request", lambda request: requested.append(request.url))

    def route(route):
        url = route.request.url
        if url.startswith(server.url + "/") or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            refused.append(url)
            route.abort()

    page.route("**/*", route)
    page.add_init_script(RECORD_VIOLATIONS)
    return requested, refused


def authorize(page, fields):
    """Fill one scheme's form of Swagger UI's Authorize dialog (fields by input id) and authorize it."""
    page.click("button.authorize")
    for selector, value in fields.items():
        page.fill(selector, value)
    form = page.locator(".auth-container", has=page.locator(next(iter(fields))))
    form.locator("button.authorize").click()
    page.click("button.btn-done")


def try_create(page, hostname):
    """Create a machine with "Try it out"; return the status Swagger UI shows."""
    create = page.locator("#operations-machines-createMachine")
    if not create.locator("button.execute").count():
        create.locator(".opblock-summary").click()
        create.locator("button.try-out__btn").click()
    create.locator("textarea.body-param__text").fill(f'{{"hostname": "{hostname}", "state": "idle"}}')
    create.locator("button.execute").click()
    status = create.locator(".live-responses-table tbody .response-col_status")
    status.wait_for()
    return status.inner_text().strip()


def test_swagger_ui_tries_a_write_with_basic_auth_loads_nothing_from_outside_and_is_linked(page, server, anon):
    requested, refused = watch(page, server)
    spec = anon.get("/openapi.json").json()
    operations = sum(1 for item in spec["paths"].values() for method in item if method in
                     ("get", "post", "put", "patch", "delete"))

    page.goto("/docs/swagger")
    page.wait_for_selector(".opblock")
    assert page.locator(".opblock").count() == operations

    # Authorize with HTTP Basic, then create a machine with "Try it out".
    authorize(page, {"#auth-basic-username": "operator", "#auth-basic-password": PASSWORDS["operator"]})
    assert try_create(page, "from-swagger") == "201"
    stored = server.db.machines.find_one({"hostname": "from-swagger"})
    assert stored["state"] == "idle"
    screenshot(page, "swagger.png")

    assert refused == []
    assert requested and all(url.startswith(server.url + "/") for url in requested), requested
    assert f"{server.url}/docs/swagger/assets/swagger-ui-bundle.js" in requested
    assert page.evaluate("window.cspViolations") == []
    # The recorder is not blind: an inline style attribute is refused and reported.
    page.evaluate("document.body.insertAdjacentHTML('beforeend', '<b style=\"color: red\">x</b>')")
    page.wait_for_function("window.cspViolations.length > 0")
    assert page.evaluate("window.cspViolations")[0]["directive"].startswith("style-src")

    # The reference links each operation to the same operation in Swagger UI, opened.
    page.goto("/docs")
    page.click("#updateMachine summary")
    page.click("#updateMachine a.try-it")
    page.wait_for_url("**/docs/swagger#/machines/updateMachine")
    page.wait_for_selector("#operations-machines-updateMachine.is-open")
    assert page.locator("#operations-machines-updateMachine .opblock-summary-path").inner_text().startswith(
        "/machines/")
    assert refused == [] and page.evaluate("window.cspViolations") == []


def test_swagger_ui_authorizes_with_an_api_token(page, server, operator):
    token = operator.post("/tokens", json={"scope": "write", "description": "swagger"}).json()["token"]
    page.goto("/docs/swagger")
    page.wait_for_selector(".opblock")
    authorize(page, {"#auth-bearer-value": token})
    assert try_create(page, "from-swagger-token") == "201"
    entry = server.db.history.find_one({"action": "create"})
    assert entry["user"] == "operator"

"""/docs/swagger over plain HTTP: Swagger UI from the pinned package, served locally, under the dashboard's CSP."""

import re
from importlib.metadata import version

import pytest
import requests

from resource_manager.web import CSP

HTML = {"Accept": "text/html"}


def test_the_swagger_page_has_the_dashboards_policy_and_only_local_assets(server):
    response = requests.get(server.url + "/docs/swagger", headers=HTML, timeout=30)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
    csp = response.headers["Content-Security-Policy"]
    assert csp == CSP
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "http" not in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    page = response.text
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<script>" not in page and " style=" not in page  # nothing inline for the policy to allow
    assert f"Swagger UI {version('flask-swagger-ui')}" in page
    assets = re.findall(r'(?:src|href)="(/[^"]+\.(?:css|js|png))"', page)
    types = {"css": "text/css", "js": "text/javascript", "png": "image/png"}
    assert len(assets) == 5
    for asset in assets:
        got = requests.get(server.url + asset, timeout=30)
        assert got.status_code == 200, asset
        assert got.headers["Content-Type"].startswith(types[asset.rsplit(".", 1)[1]]), asset
        assert got.headers["X-Content-Type-Options"] == "nosniff"
    spec_url = re.search(r'data-spec="([^"]+)"', page).group(1)
    assert requests.get(server.url + spec_url, timeout=30).json()["openapi"].startswith("3.")


@pytest.mark.parametrize("name", ["index.html", "oauth2-redirect.html", "swagger-ui.js", "..%2Fflask_swagger_ui.py",
                                  "VERSION"])
def test_only_the_files_the_page_loads_are_served(server, name):
    assert requests.get(f"{server.url}/docs/swagger/assets/{name}", timeout=30).status_code == 404


def test_the_reference_offers_try_it_out(server, anon):
    page = requests.get(server.url + "/docs", headers=HTML, timeout=30).text
    assert 'id="try-it-out" href="/docs/swagger"' in page
    spec = anon.get("/openapi.json").json()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                assert f'href="/docs/swagger#/{op["tags"][0]}/{op["operationId"]}"' in page, (method, path)

"""The API docs work offline: /docs (Swagger UI) and /redoc load every asset from the app itself, and the OpenAPI
document is also at /openapi.json."""

import re
from pathlib import Path

import pytest

from web.test_browser import CHROMIUM, FLAGS, server  # noqa: F401  (the uvicorn fixture)

REFERENCE = re.compile(r"""(?:src|href|spec-url)="([^"]+)"|url: '([^']+)'""")


def references(html: str) -> list[str]:
    """Every URL a docs page makes the browser load."""
    return [a or b for a, b in REFERENCE.findall(html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_local_assets(client, page):
    r = client.get(page)
    assert r.status_code == 200
    assert "http://" not in r.text and "https://" not in r.text  # no CDN, no font service
    urls = references(r.text)
    assert any(u.endswith(".js") for u in urls) and "/api/v1/openapi.json" in urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 0, url
        if url.endswith(".css"):  # what a stylesheet loads in turn is inline data
            assert all(u.startswith("data:") for u in re.findall(r"url\(\"?([^\")]+)", asset.text)), url


def test_openapi_document_at_the_root_too(client):
    root = client.get("/openapi.json")
    assert root.status_code == 200 and root.json() == client.get("/api/v1/openapi.json").json()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_swagger_ui_renders_with_no_network_but_the_app(server):  # noqa: F811
    """With every request that leaves the app refused, Swagger UI still shows the API's operations."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page()
        refused = []

        def offline(route):
            if route.request.url.startswith(server):
                route.continue_()
            else:
                refused.append(route.request.url)
                route.abort()

        page.route("**/*", offline)
        page.goto(server + "/docs")
        page.wait_for_selector(".opblock", timeout=30_000)
        paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent)")
        browser.close()
    assert "/api/v1/jobs" in [p.replace("\u200b", "") for p in paths]
    assert refused == []

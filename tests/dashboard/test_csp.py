"""Every page sends a strict Content-Security-Policy, and no page needs what it forbids:
no inline script, inline style, style attribute or event handler attribute."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.test import Client

from dashboard.app.assets import PLOTLY_JS, asset, plotly_rules

pytestmark = pytest.mark.django_db

PAGES = ["/", "/services/inventory/", "/audit/", "/overview/cards", "/api/docs/"]
STRICT = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "object-src": "'none'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
}


def policy(response: object) -> dict[str, str]:
    header = response["Content-Security-Policy"]  # type: ignore[index]
    items = (part.strip().split(None, 1) for part in header.split(";") if part.strip())
    return {name: value for name, value in items}


class Inline(HTMLParser):
    """Collects what a strict policy refuses in an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._script_type: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        self.found += [f"{tag}[{n}]" for n in names if n == "style" or n.startswith("on")]
        if tag == "style":
            self.found.append("<style>")
        if tag == "script" and "src" not in names:
            self._script_type = names.get("type") or "text/javascript"
        if tag == "a" and (names.get("href") or "").startswith("javascript:"):
            self.found.append("javascript: URL")

    def handle_data(self, data: str) -> None:
        # JSON data blocks (json_script) are not run; anything else inline is.
        if self._script_type and self._script_type != "application/json" and data.strip():
            self.found.append(f"inline <script type={self._script_type}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script_type = None


def inline_parts(html: str) -> list[str]:
    parser = Inline()
    parser.feed(html)
    return parser.found


def test_the_login_page_sends_the_strict_policy(client: Client) -> None:
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert STRICT.items() <= policy(response).items()
    assert inline_parts(response.content.decode()) == []


@pytest.mark.parametrize("path", PAGES)
def test_every_page_sends_the_policy_and_needs_no_inline_script(
    operator_client: Client, path: str
) -> None:
    response = operator_client.get(path)
    assert response.status_code == 200
    directives = policy(response)
    assert directives["script-src"] == "'self'"
    assert directives["default-src"] == "'self'"
    found = inline_parts(response.content.decode())
    if path == "/api/docs/":
        # Swagger UI's page keeps a small <style>; its script comes from a URL.
        assert found == ["<style>"]
        assert directives["style-src"] == "'self' 'unsafe-inline'"
    else:
        assert found == []
        assert directives["style-src"] == "'self'"


def test_the_api_docs_script_comes_from_its_own_url(operator_client: Client) -> None:
    response = operator_client.get("/api/docs/?script=")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle" in response.content


def test_the_stylesheets_are_served_to_anyone_and_scripts_to_users(client: Client) -> None:
    css = asset("ballast.css")
    assert css is not None
    response = client.get(css.url)  # the login page needs it before any login
    assert response.status_code == 200
    assert response["Content-Type"] == "text/css; charset=utf-8"
    assert b"--accent" in response.content
    script = asset("service.js")
    assert script is not None
    assert client.get(script.url).status_code == 302  # to the login page


def test_the_overview_colors_and_bar_widths_are_classes(operator_client: Client) -> None:
    css = asset("overview.css")
    assert css is not None
    body = operator_client.get(css.url).content.decode()
    assert ".p0 { background: #4e79a7; }" in body
    assert ".w0 { width: 0%; }" in body and ".w100 { width: 100%; }" in body


def test_plotlys_own_rules_are_a_stylesheet() -> None:
    rules = plotly_rules(PLOTLY_JS.read_text(encoding="utf-8"))
    assert ".js-plotly-plot .plotly .modebar{position:absolute;top:2px;right:2px;}" in rules
    assert plotly_rules("no rules here") == []

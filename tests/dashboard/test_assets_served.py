"""The scripts and stylesheets travel compressed when the browser takes gzip, and are
kept by the browser for a year: the service page's 1.2 MB of plotly.js (the basic
bundle) is about a third of that on the wire, fetched once."""

from __future__ import annotations

import gzip

import pytest
from django.test import Client

from dashboard.app.assets import accepts_gzip, asset
from tests.dashboard.test_service_page import plotly_url_of

pytestmark = pytest.mark.django_db


def _plotly_url(client: Client) -> str:
    html = client.get("/services/inventory/").content.decode()
    return plotly_url_of(html)


def test_it_sends_plotly_gzipped_to_a_browser_that_takes_gzip(operator_client: Client) -> None:
    url = _plotly_url(operator_client)
    response = operator_client.get(url, HTTP_ACCEPT_ENCODING="gzip, deflate, br, zstd")
    assert response.status_code == 200
    assert response["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in response["Vary"]
    assert "immutable" in response["Cache-Control"]
    plotly = asset("plotly.min.js")
    assert plotly is not None
    assert len(response.content) < len(plotly.body) / 2
    assert gzip.decompress(response.content) == plotly.body


def test_it_sends_the_plain_body_to_a_client_without_gzip(operator_client: Client) -> None:
    url = _plotly_url(operator_client)
    for header in ("", "identity", "gzip;q=0, identity"):
        response = operator_client.get(url, HTTP_ACCEPT_ENCODING=header)
        assert not response.has_header("Content-Encoding"), header
        assert b"plotly.js" in response.content[:5000].lower()


def test_it_gzips_stylesheets_for_anonymous_visitors_too(client: Client) -> None:
    css = asset("ballast.css")
    assert css is not None
    response = client.get(css.url, HTTP_ACCEPT_ENCODING="gzip")
    assert response["Content-Encoding"] == "gzip"
    assert gzip.decompress(response.content) == css.body


def test_it_reads_accept_encoding_as_browsers_send_it() -> None:
    assert accepts_gzip("gzip, deflate, br")
    assert accepts_gzip("br;q=1.0, GZIP;q=0.5")
    assert not accepts_gzip("gzip;q=0")
    assert not accepts_gzip("deflate, br")
    assert not accepts_gzip("")

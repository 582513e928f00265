"""The OpenAPI schema, its docs page served without a CDN, and the schema fuzzed against the
running API (schemathesis): no request makes it fail with a server error."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.control.conftest import OPERATOR_SESSION, OPERATOR_TOKEN, PODS, SERVICE, Api, http

pytestmark = pytest.mark.django_db(transaction=True)


async def test_the_schema_describes_every_endpoint(api: Api) -> None:
    reply = await api.call("GET", "/api/schema/")
    assert reply.status == 200
    paths = reply.body["paths"]
    assert "/api/v1/services/{service}/pods/{pod}/weight" in paths
    weight = reply.body["components"]["schemas"]["WeightIn"]["properties"]["weight"]
    assert (weight["type"], weight["minimum"], weight["maximum"]) == ("integer", 0, 10000)
    assert "/api/v1/services/{service}/automation" in paths and "/api/v1/automation/" in paths
    # 16, the desired state, the operations' cancel, a pod's explain, the automation switches
    # and pause, a service's findings
    assert len(paths) == 22
    assert "/api/v1/services/{service}/findings/" in paths


async def test_the_docs_page_loads_its_scripts_from_this_server(api: Api) -> None:
    page = await api.call("GET", "/api/docs/", who=OPERATOR_SESSION)
    assert page.status == 200
    sources = re.findall(r'<script src="([^"]+)"', page.body) + re.findall(
        r'<link rel="stylesheet" href="([^"]+)"', page.body
    )
    assert sources
    for source in sources:
        # Swagger UI's own files, and its set-up script from the docs view (not inline,
        # for the Content-Security-Policy).
        assert source.startswith(("/static/", "/api/docs/?script=")), source
        asset = await asyncio.to_thread(http, "GET", api.url(source))
        assert asset.status == 200, source


async def test_the_docs_page_sends_a_browser_without_a_session_to_log_in(api: Api) -> None:
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as answer:
        await asyncio.to_thread(opener.open, api.url("/api/docs/"), timeout=10)
    assert answer.value.code == 302
    assert answer.value.headers["Location"].startswith("/accounts/login/")


def _fuzz(api: Api, max_examples: int) -> list[str]:
    """Every operation with generated requests (valid and not, on the real service and
    pods and on made-up ones); what failed, as `METHOD path: status body`."""
    headers = api.credentials.headers[OPERATOR_TOKEN]
    schema = schemathesis.openapi.from_url(api.url("/api/schema/"), headers=headers)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        names = {p.name for p in operation.path_parameters}
        strategies = [operation.as_strategy(), operation.as_strategy(GenerationMode.NEGATIVE)]
        for pod in PODS:
            real = {"service": SERVICE, "pod": pod}
            pinned = {k: v for k, v in real.items() if k in names}
            strategies.append(operation.as_strategy(path_parameters=pinned))

        @given(case=st.one_of(strategies))
        @settings(
            max_examples=max_examples, deadline=None, database=None,
            suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        def run(case: Any) -> None:
            response = case.call(base_url=api.url(""), headers=headers, timeout=30)
            # 503 is the documented answer of an act no replica took, or of a restart
            # without a platform: JSON with a detail. Anything else 5xx is a bug.
            documented = response.status_code == 503 and "detail" in response.json()
            if response.status_code >= 500 and not documented:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code}")

        run()
    return failures


async def test_no_generated_request_makes_a_server_error(api: Api) -> None:
    assert await asyncio.to_thread(_fuzz, api, 15) == []

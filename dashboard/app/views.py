"""Pages. Every view needs a logged-in user (``LoginRequiredMiddleware``)."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from balancer.endpoint import MAX_WEIGHT, MIN_WEIGHT
from balancer.picker import POLICIES
from dashboard.app.assets import PlotlyMissing, accepts_gzip, asset, plotly_guard_ids
from dashboard.app.history import recent_frames, service_history
from dashboard.app.overview import PALETTE, overview
from dashboard.collector.history import json_array
from dashboard.control.api import observed
from dashboard.control.api.filters import AuditFilter
from dashboard.control.models import AuditEvent, Operation
from dashboard.control.roles import can_act, role_of

# The browser keeps a script for a year: its URL changes with its content.
IMMUTABLE = "private, max-age=31536000, immutable"
AUDIT_PAGE_SIZE = 50
# The audit page's filters: GET parameter → the AuditEvent field it must equal.
AUDIT_FILTERS = ("service", "target", "actor", "action", "result", "since", "until")
OPERATIONS_SHOWN = 20


@require_safe
def index(request: HttpRequest) -> HttpResponse:
    """The overview: every service of ``BALLAST_SERVICES`` at a glance, refreshed in place."""
    context = {
        **_overview_context(),
        "refresh_url": reverse("overview_cards"),
        "refresh_ms": max(1000, settings.BALLAST_COLLECTOR_INTERVAL_MS),
        "overview_js_url": _asset_url("overview.js"),
        "palette": PALETTE,
    }
    return render(request, "ballast/index.html", context)


@require_safe
@never_cache
def overview_cards(request: HttpRequest) -> HttpResponse:
    """The overview's cards alone: what the page's script swaps in on every refresh."""
    return render(request, "ballast/_overview.html", _overview_context())


def _overview_context() -> dict[str, object]:
    summaries = overview()
    return {"summaries": summaries, "replicas": observed.replicas()}


def _known(service: str) -> str:
    if service not in settings.BALLAST_SERVICES:
        raise Http404("No such service")
    return service


@require_safe
def service(request: HttpRequest, service: str) -> HttpResponse:
    """One service's live per-pod charts and table; 404 for a service not configured, 503
    with what to do when plotly.js was not installed (``make install``)."""
    try:
        return _service_page(request, _known(service))
    except PlotlyMissing as missing:
        return HttpResponse(f"{missing}\n", status=503, content_type="text/plain")


def _service_page(request: HttpRequest, service: str) -> HttpResponse:
    page = {
        "service": service,
        "ws_path": f"/ws/services/{service}/",
        "login_url": f"{reverse('login')}?{urlencode({'next': request.path})}",
        # The charts keep as many points as the history holds: its window.
        "max_points": service_history().capacity,
        # Viewers get no buttons; the API refuses them anyway (and audits the attempt).
        "can_act": can_act(request.user),
        "role": role_of(request.user),
        "api": f"/api/v1/services/{service}/",
        "operations_api": "/api/v1/operations/",
        "policies": list(POLICIES),
        "min_weight": MIN_WEIGHT,
        "max_weight": MAX_WEIGHT,
        "audit_url": f"{reverse('audit')}?{urlencode({'service': service})}",
        # A frame gives each pod its color's index in this palette (the overview's too).
        "palette": list(PALETTE),
        "audit_api": "/api/v1/audit/",
        # The automation card (automation.js): the service's switches and the global pause.
        "automation_api": f"/api/v1/services/{service}/automation",
        "pause_api": "/api/v1/automation/",
        # Loaded by service.js once the page is up: the table and badges show first.
        "plotly_url": _asset_url("plotly.min.js"),
        # The collector's frame interval: no frame for three of them and the page greys.
        "interval_ms": settings.BALLAST_COLLECTOR_INTERVAL_MS,
    }
    context = {
        "service": service,
        "page": page,
        "plotly_url": _asset_url("plotly.min.js"),
        "plotly_guard_ids": plotly_guard_ids(),
        "controls_js_url": _asset_url("controls.js"),
        "explain_js_url": _asset_url("explain.js"),
        "charts_js_url": _asset_url("charts.js"),
        "oom_js_url": _asset_url("oom.js"),
        "service_js_url": _asset_url("service.js"),
        "automation_js_url": _asset_url("automation.js"),
    }
    return render(request, "ballast/service.html", context)


@require_safe
@never_cache
def service_history_json(request: HttpRequest, service: str) -> HttpResponse:
    """The service's frames of the last ``HISTORY_WINDOW_S`` as a JSON array, oldest first."""
    frames = recent_frames(_known(service), int(time.time() * 1000))
    return HttpResponse(json_array(frames), content_type="application/json")


@require_safe
def audit(request: HttpRequest) -> HttpResponse:
    """The audit log, newest first, 50 a page, filtered by the GET parameters of
    ``AUDIT_FILTERS``; the operations, running ones first, above it."""
    filters = {name: request.GET.get(name, "").strip() for name in AUDIT_FILTERS}
    events, filter_error = _filtered_events(filters)
    page = Paginator(events, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    for event in page:
        event.change = change_text(event.before, event.after)  # type: ignore[attr-defined]
    kept = urlencode({name: value for name, value in filters.items() if value})
    context = {
        "page": page,
        "filters": filters,
        "filter_error": filter_error,
        "query": kept,
        "choices": _audit_choices(),
        "operations": _operations(filters["service"]),
    }
    return render(request, "ballast/audit.html", context)


def _filtered_events(filters: dict[str, str]) -> tuple[QuerySet[AuditEvent], str]:
    """The API's audit filters (`AuditFilter`), so the page and /api/v1/audit/ agree;
    and what is wrong with them ("" when nothing is)."""
    events = AuditEvent.objects.order_by("-at", "-id")
    found = AuditFilter({k: v for k, v in filters.items() if v}, queryset=events)
    if found.is_valid():
        return found.qs, ""
    # A value no event can have (a hand-edited URL) matches nothing, and the page says why.
    problems = [f"{name}: {' '.join(errors)}" for name, errors in found.errors.items()]
    return events.none(), "; ".join(problems)


def change_text(before: object, after: object) -> str:
    """What an audit event changed, compactly: the fields that differ ("weight 100 →
    300, drained no → yes"), what a new override holds ("— → weight 300") or what a
    cleared one held ("weight 300 → cleared"); "" when nothing changed."""
    old = before if isinstance(before, dict) else {}
    new = after if isinstance(after, dict) else {}
    if old and after is None:
        return f"{_held(old) or 'override'} → cleared"
    if new and before is None:
        return f"— → {_held(new)}" if _held(new) else ""
    keys = [*old, *(k for k in new if k not in old)]
    return ", ".join(
        f"{k} {_shown(old.get(k))} → {_shown(new.get(k))}" for k in keys if old.get(k) != new.get(k)
    )


def _held(state: dict[str, object]) -> str:
    """The fields that ask for something (neither unset nor false)."""
    return ", ".join(f"{k} {_shown(v)}" for k, v in state.items() if v not in (None, False))


def _shown(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _audit_choices() -> dict[str, list[str]]:
    """What the filter form offers: the services configured and the results, actions
    there are."""
    actions = AuditEvent.objects.order_by("action").values_list("action", flat=True).distinct()
    return {
        "service": list(settings.BALLAST_SERVICES),
        "action": list(actions),
        "result": list(AuditEvent.Result.values),
    }


def _operations(service: str) -> list[Operation]:
    """Running operations first, then the newest finished ones."""
    operations = Operation.objects.all()
    if service:
        operations = operations.filter(service=service)
    running = list(operations.exclude(step__in=Operation.FINISHED).order_by("-started_at"))
    finished = operations.filter(step__in=Operation.FINISHED).order_by("-started_at")
    return running + list(finished[: max(0, OPERATIONS_SHOWN - len(running))])


@require_safe
@login_not_required
def script(request: HttpRequest, digest: str, name: str) -> HttpResponse:
    """A script or stylesheet the pages load, at the URL its content hash names (404 for a
    stale one). Stylesheets are public (the login page has one), scripts need a login."""
    found = asset(name)
    if found is None or found.digest != digest:
        raise Http404("No such script")
    if not found.public and not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if accepts_gzip(request.headers.get("Accept-Encoding", "")):
        response = HttpResponse(found.gzipped(), content_type=found.content_type)
        response["Content-Encoding"] = "gzip"
        response["ETag"] = f'"{found.digest}-gzip"'
    else:
        response = HttpResponse(found.body, content_type=found.content_type)
        response["ETag"] = f'"{found.digest}"'
    response["Cache-Control"] = IMMUTABLE
    # A shared cache must not hand the compressed body to a client that did not ask for it.
    response["Vary"] = "Accept-Encoding"
    return response


def _asset_url(name: str) -> str:
    found = asset(name)
    assert found is not None, name
    return found.url

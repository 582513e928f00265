"""The REST API's URLs, under /api/: version 1, its OpenAPI schema and its docs page."""

from __future__ import annotations

from csp.constants import UNSAFE_INLINE
from csp.decorators import csp_update
from django.contrib.auth.decorators import login_required
from django.urls import URLPattern, URLResolver, path
from drf_spectacular.renderers import (
    OpenApiJsonRenderer,
    OpenApiJsonRenderer2,
    OpenApiYamlRenderer,
    OpenApiYamlRenderer2,
)
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.permissions import IsAuthenticated

from dashboard.control.api import acts, automation, desired_state, explain, findings, reads
from dashboard.control.api.base import ControlView

POD = "v1/services/<str:service>/pods/<str:pod>/"


class Schema(ControlView, SpectacularAPIView):
    """The OpenAPI schema, for a logged-in user or a token: JSON unless YAML is asked for
    (`?format=yaml`), so its errors are JSON as the API's are."""

    permission_classes = [IsAuthenticated]
    renderer_classes = [
        OpenApiJsonRenderer, OpenApiJsonRenderer2, OpenApiYamlRenderer, OpenApiYamlRenderer2,
    ]  # fmt: skip


urlpatterns: list[URLPattern | URLResolver] = [
    path("v1/services/", reads.ServiceList.as_view(), name="api-services"),
    path("v1/services/<str:service>/", reads.ServiceDetail.as_view(), name="api-service"),
    path("v1/services/<str:service>/pods/", reads.PodList.as_view(), name="api-pods"),
    path(POD, reads.PodDetail.as_view(), name="api-pod"),
    path(POD + "explain/", explain.PodExplain.as_view(), name="api-pod-explain"),
    path("v1/services/<str:service>/stats/", reads.ServiceStats.as_view(), name="api-stats"),
    path(
        "v1/services/<str:service>/findings/",
        findings.ServiceFindings.as_view(),
        name="api-findings",
    ),
    path(POD + "weight", acts.SetWeight.as_view(), name="api-pod-weight"),
    path(POD + "drain", acts.Drain.as_view(), name="api-pod-drain"),
    path(POD + "undrain", acts.Undrain.as_view(), name="api-pod-undrain"),
    path(POD + "override", acts.EndpointOverrideView.as_view(), name="api-pod-override"),
    path(POD + "restart", acts.Restart.as_view(), name="api-pod-restart"),
    path(
        "v1/services/<str:service>/rollout-restart",
        acts.RolloutRestart.as_view(),
        name="api-rollout-restart",
    ),
    path("v1/services/<str:service>/policy", acts.Policy.as_view(), name="api-policy"),
    path(
        "v1/services/<str:service>/automation",
        automation.ServiceAutomationView.as_view(),
        name="api-service-automation",
    ),
    path("v1/automation/", automation.PauseView.as_view(), name="api-automation"),
    path("v1/replicas/", reads.ReplicaList.as_view(), name="api-replicas"),
    path("v1/audit/", reads.AuditList.as_view(), name="api-audit"),
    path("v1/operations/", reads.OperationList.as_view(), name="api-operations"),
    path("v1/desired-state/", desired_state.DesiredState.as_view(), name="api-desired-state"),
    path("v1/operations/<int:pk>/", reads.OperationDetail.as_view(), name="api-operation"),
    path(
        "v1/operations/<int:pk>/cancel",
        acts.CancelOperation.as_view(),
        name="api-operation-cancel",
    ),
    path("schema/", Schema.as_view(), name="api-schema"),
    # The docs page is a page: a browser without a session is sent to log in (DRF's views
    # are exempt from LoginRequiredMiddleware, so it says so itself).
    path(
        "docs/",
        # The split view loads its set-up script from a URL rather than inline, for the
        # Content-Security-Policy; Swagger UI's page keeps a small inline <style>.
        login_required(
            csp_update({"style-src": [UNSAFE_INLINE]})(
                SpectacularSwaggerSplitView.as_view(url_name="api-schema")
            )
        ),
        name="api-docs",
    ),
]

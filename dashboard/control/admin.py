"""The admin: desired state (editable, for an emergency fix by hand), the audit log and the
operations (read-only: they are records). API tokens are knox's `AuthToken` admin:
adding one shows the token once, deleting one revokes it."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from dashboard.control.models import AuditEvent, ClusterOverride, EndpointOverride, Operation


class ReadOnly(admin.ModelAdmin):
    """Records are looked at, never written by hand."""

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnly):
    list_display = ["at", "actor", "source", "action", "service", "target", "result"]
    list_filter = ["result", "action", "source", "service", "at"]
    search_fields = ["actor", "target", "detail", "token"]
    date_hierarchy = "at"


@admin.register(Operation)
class OperationAdmin(ReadOnly):
    list_display = ["started_at", "kind", "service", "target", "step", "actor", "finished_at"]
    list_filter = ["kind", "step", "service"]
    search_fields = ["target", "actor", "new_pod"]


@admin.register(EndpointOverride)
class EndpointOverrideAdmin(admin.ModelAdmin):
    list_display = ["service", "endpoint_id", "weight", "drained", "expires_at", "updated_by"]
    list_filter = ["service", "drained"]
    search_fields = ["endpoint_id"]


@admin.register(ClusterOverride)
class ClusterOverrideAdmin(admin.ModelAdmin):
    list_display = ["service", "policy", "base_policy", "expires_at", "updated_by"]

"""The audit log's and the operations' query filters (django-filter)."""

from __future__ import annotations

from django.db.models import QuerySet
from django_filters import rest_framework as filters

from dashboard.control.models import AuditEvent, Operation


class AuditFilter(filters.FilterSet):
    since = filters.IsoDateTimeFilter(
        field_name="at", lookup_expr="gte", help_text="ISO 8601; events at or after it."
    )
    until = filters.IsoDateTimeFilter(
        field_name="at", lookup_expr="lte", help_text="ISO 8601; events at or before it."
    )

    class Meta:
        model = AuditEvent
        fields = ["service", "target", "actor", "action", "result"]


class OperationFilter(filters.FilterSet):
    running = filters.BooleanFilter(method="filter_running", help_text="true or false")

    class Meta:
        model = Operation
        fields = ["service", "kind"]

    def filter_running(
        self, queryset: QuerySet[Operation], name: str, value: bool | None
    ) -> QuerySet[Operation]:
        if value is None:
            return queryset
        finished = {"step__in": Operation.FINISHED}
        return queryset.exclude(**finished) if value else queryset.filter(**finished)

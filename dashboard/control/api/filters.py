"""The audit log's and the operations' query filters (django-filter)."""

from __future__ import annotations

from datetime import UTC, datetime

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField

from dashboard.control.models import AuditEvent, Operation

OUT_OF_RANGE = "is out of range: use a date and time from 0001-01-01 to 9999-12-31 in UTC"


class InRangeIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 date and time that exists in UTC too: `0001-01-01T00:00+05:00` parses,
    but the database compares in UTC, where it would be in year 0 (OverflowError)."""

    def to_python(self, value: object) -> datetime | None:
        try:
            parsed: datetime | None = super().to_python(value)
            if parsed is not None:
                parsed.astimezone(UTC)
        except OverflowError:
            raise ValidationError(f"{str(value)[:64]} {OUT_OF_RANGE}", code="invalid") from None
        return parsed


class InRangeIsoDateTimeFilter(filters.IsoDateTimeFilter):
    field_class = InRangeIsoDateTimeField


class AuditFilter(filters.FilterSet):
    since = InRangeIsoDateTimeFilter(
        field_name="at", lookup_expr="gte", help_text="ISO 8601; events at or after it."
    )
    until = InRangeIsoDateTimeFilter(
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

"""Automation: per service what Ballast may do on its own (`autoweights`, `oom_guard`), the
auto weights it gives, and the one switch that pauses all of it. Anyone logged in reads;
turning things on or off needs the operator role (others get 403, audited), and every
change is audited with the operator as actor.

- `GET /api/v1/services/{service}/automation`: the switches, the pause, the auto weights
  with their reasons; `PATCH` with `{"autoweights": true}` and/or `{"oom_guard": false}`
  sets those given and keeps the others.
- `GET /api/v1/automation/`: the pause; `PUT {"paused": true}` stops every automatic
  action on every service (the auto weights are dropped: pods go back to their
  defaults), `{"paused": false}` lets it run again.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from dashboard.control import automation
from dashboard.control.api.base import ACTING, ControlView, actor_of
from dashboard.control.api.parsers import StrictJSONParser
from dashboard.control.api.serializers import ErrorOut


class StrictBooleanField(serializers.BooleanField):
    """JSON true or false and nothing else (not "true", 1 or "on")."""

    default_error_messages = {"invalid": "must be true or false"}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class Strict(serializers.Serializer):
    """A body with only the fields it names: a misspelt switch is an error, not ignored."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                f"unknown field(s) {', '.join(unknown)}: send {', '.join(self.fields)}"
            )
        return attrs


class SwitchesIn(Strict):
    autoweights = StrictBooleanField(
        required=False, help_text="Weights from each pod's CPU per call (overrides win)."
    )
    oom_guard = StrictBooleanField(
        required=False, help_text="Drain and restart a pod before the OOM killer does."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        if not attrs:
            raise serializers.ValidationError(
                "send one or more of autoweights, oom_guard as true or false,"
                ' e.g. {"autoweights": true}'
            )
        return attrs


class PauseIn(Strict):
    paused = StrictBooleanField(help_text="true stops every automatic action on every service.")


class AutoWeightOut(serializers.Serializer):
    pod = serializers.CharField()
    weight = serializers.IntegerField()
    reason = serializers.CharField(help_text="The pod's CPU, calls/s and errors behind it.")
    updated_at = serializers.DateTimeField()


class AutomationOut(serializers.Serializer):
    service = serializers.CharField()
    autoweights = serializers.BooleanField()
    oom_guard = serializers.BooleanField()
    paused = serializers.BooleanField(help_text="All automation stopped (GET/PUT /automation/).")
    updated_by = serializers.CharField(allow_null=True)
    updated_at = serializers.DateTimeField(allow_null=True)
    auto_weights = AutoWeightOut(many=True)


class PauseOut(serializers.Serializer):
    paused = serializers.BooleanField()
    updated_by = serializers.CharField(allow_null=True)
    updated_at = serializers.DateTimeField(allow_null=True)


def _body(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    data = request.data if isinstance(request.data, dict) else {}
    body = serializer_class(data=data)
    body.is_valid(raise_exception=True)
    return dict(body.validated_data)


class ServiceAutomationView(ControlView):
    parser_classes = [StrictJSONParser]
    action_names = {"PATCH": automation.SET_AUTOMATION}

    @extend_schema(responses={200: AutomationOut, 404: ErrorOut})
    def get(self, request: Request, service: str) -> Response:
        """The service's automation switches, the global pause and its pods' auto weights."""
        return Response(AutomationOut(automation.automation_state(service)).data)

    @extend_schema(request=SwitchesIn, responses={200: AutomationOut, 400: ErrorOut, 404: ErrorOut})
    def patch(self, request: Request, service: str) -> Response:
        """Turns the switches given on or off (the others stay); turning autoweights off
        gives the pods their default weights back."""
        body = _body(SwitchesIn, request)
        with ACTING:
            state = automation.set_switches(actor_of(request), service, body)
        return Response(AutomationOut(state).data)


class PauseView(ControlView):
    parser_classes = [StrictJSONParser]
    action_names = {"PUT": "pause_automation"}

    @extend_schema(responses=PauseOut)
    def get(self, request: Request) -> Response:
        """Whether every automatic action is paused."""
        return Response(PauseOut(automation.pause_state()).data)

    @extend_schema(request=PauseIn, responses={200: PauseOut, 400: ErrorOut})
    def put(self, request: Request) -> Response:
        """Pauses (true) or resumes (false) every automatic action on every service."""
        body = _body(PauseIn, request)
        with ACTING:
            state = automation.set_paused(actor_of(request), body["paused"])
        return Response(PauseOut(state).data)

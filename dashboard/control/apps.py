from __future__ import annotations

from django.apps import AppConfig


class ControlConfig(AppConfig):
    name = "dashboard.control"
    label = "control"
    verbose_name = "Ballast control: desired state, operations and audit"

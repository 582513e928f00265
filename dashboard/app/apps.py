from __future__ import annotations

from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard.app"
    label = "ballast"
    verbose_name = "Ballast dashboard"

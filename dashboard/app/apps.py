from __future__ import annotations

from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard.app"
    label = "ballast"
    verbose_name = "Ballast dashboard"

    def ready(self) -> None:
        from django.core import checks

        from dashboard.app import checks as ballast_checks

        checks.register(ballast_checks.check_channel_layer)
        checks.register(ballast_checks.check_debug_hosts, checks.Tags.security)
        checks.register(ballast_checks.check_sqlite_processes)

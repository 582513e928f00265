from __future__ import annotations

from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard.app"
    label = "ballast"
    verbose_name = "Ballast dashboard"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out
        from django.core import checks

        from dashboard.app import checks as ballast_checks
        from dashboard.app.sessions import close_streams_on_logout

        user_logged_out.connect(close_streams_on_logout, dispatch_uid="ballast.close_streams")

        checks.register(ballast_checks.check_channel_layer)
        checks.register(ballast_checks.check_plotly_installed)
        checks.register(ballast_checks.check_debug_hosts, checks.Tags.security)
        checks.register(ballast_checks.check_sqlite_processes)
        checks.register(ballast_checks.check_https_proxy, checks.Tags.security, deploy=True)

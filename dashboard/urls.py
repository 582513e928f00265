"""URL map: the pages, their scripts and login/logout. Websocket URLs are in ``app/routing.py``."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import URLPattern, URLResolver, include, path

from dashboard.app import views

# Only login and logout from django.contrib.auth: the password reset views would
# need outgoing mail, and accounts are made with `manage.py createsuperuser`.
urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.index, name="index"),
    path("overview/cards", views.overview_cards, name="overview_cards"),
    path("services/<str:service>/", views.service, name="service"),
    path(
        "services/<str:service>/history.json",
        views.service_history_json,
        name="service_history",
    ),
    path("audit/", views.audit, name="audit"),
    path("assets/<str:digest>/<str:name>", views.script, name="asset"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/", include("dashboard.control.api.urls")),
    # Accounts, roles (groups) and API tokens, for admins.
    path("admin/", admin.site.urls),
]

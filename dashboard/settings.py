"""Django settings for the Ballast dashboard, read from the environment in one place.

Variables (all optional unless noted):

- ``SECRET_KEY`` / ``SECRET_KEY_FILE`` — required unless ``DEBUG`` or ``BALLAST_DEV``.
- ``DEBUG`` — false by default.
- ``BALLAST_DEV`` — a laptop run: a random secret key per process when none is set.
- ``ALLOWED_HOSTS`` — comma-separated; loopback by default. Also the websocket
  ``Origin`` allow-list.
- ``CSRF_TRUSTED_ORIGINS`` — comma-separated ``scheme://host[:port]`` origins that differ
  from the host a request came to (a TLS proxy in front); same-origin needs none.
- ``BALLAST_HTTPS`` — served over HTTPS: cookies are sent over HTTPS only.
- ``DATABASE_URL`` — e.g. ``postgres://user:pass@host/db`` (``pip install 'ballast[postgres]'``);
  SQLite at ``BALLAST_DB_PATH`` (default ``db.sqlite3`` in the checkout) otherwise.
- ``REDIS_URL`` — the Redis channel layer; the in-memory layer (one process) otherwise.
- ``BALLAST_DASHBOARD_PROCESSES`` — how many dashboard processes run (default 1); the
  system checks use it to catch an in-memory channel layer shared by none of them.
- ``BALLAST_SERVICES`` — comma-separated names of the balancer services to show; each is
  the balancer cluster and the platform deployment of the same name.
- ``BALLAST_BALANCERS`` — the balancer replicas the collector watches, comma-separated
  ``id=host:port`` of their admin APIs (e.g. ``b0=127.0.0.1:9901,b1=10.0.0.2:9901``).
- ``BALLAST_ADMIN_TOKEN`` / ``BALLAST_ADMIN_TOKEN_FILE`` — the balancers' admin API token.
- ``BALLAST_ADMIN_CA_FILE`` — the balancers' admin API serves TLS: the CA (PEM) that signed
  its certificate. ``BALLAST_ADMIN_CERT_FILE`` + ``BALLAST_ADMIN_KEY_FILE``: a client
  certificate (admin ``tls.client_ca_file``, mTLS). ``BALLAST_ADMIN_SERVER_NAME``: the name
  its certificate carries when not the host of ``BALLAST_BALANCERS``. Plaintext when unset.
- ``BALLAST_COLLECTOR_INTERVAL_MS`` — how often frames are sent: 1000 by default, 250 at least.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from dashboard.env import (
    channel_layer_settings,
    database_settings,
    envbool,
    envint,
    envlist,
    envmap,
    envsecret,
    envstr,
    envtls,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = envbool("DEBUG", False)
BALLAST_DEV = envbool("BALLAST_DEV", False)

SECRET_KEY = envsecret("SECRET_KEY") or ""
if not SECRET_KEY:
    if not (DEBUG or BALLAST_DEV):
        raise ImproperlyConfigured(
            "SECRET_KEY is not set: set SECRET_KEY or SECRET_KEY_FILE "
            "(or BALLAST_DEV=1 for a throwaway key on a laptop)"
        )
    # A key per process: sessions end with the process, which suits a laptop run and
    # keeps every secret out of the repository.
    SECRET_KEY = secrets.token_urlsafe(50)

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

# Group-name-safe: a service name becomes the channel layer group ``service.<name>``.
SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
BALLAST_SERVICES = envlist("BALLAST_SERVICES", "", pattern=SERVICE_NAME)
BALLAST_DASHBOARD_PROCESSES = envint("BALLAST_DASHBOARD_PROCESSES", 1, minimum=1)
# The collector: balancer replica id → admin API address; the token they all take.
BALLAST_BALANCERS = envmap("BALLAST_BALANCERS", "", key=SERVICE_NAME)
BALLAST_ADMIN_TOKEN = envsecret("BALLAST_ADMIN_TOKEN")
BALLAST_ADMIN_TLS = envtls("BALLAST_ADMIN")
BALLAST_COLLECTOR_INTERVAL_MS = envint("BALLAST_COLLECTOR_INTERVAL_MS", 1000, minimum=250)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "knox",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "dashboard.app",
    "dashboard.control",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # The API docs' Swagger UI comes from drf-spectacular-sidecar's static files.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Every page needs a logged-in user unless its view says otherwise (login does).
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
ASGI_APPLICATION = "dashboard.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": database_settings(
        envstr("DATABASE_URL", ""),
        Path(envstr("BALLAST_DB_PATH", str(BASE_DIR / "db.sqlite3"))),
    )
}
CHANNEL_LAYERS = {"default": channel_layer_settings(envstr("REDIS_URL", ""))}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "index"
LOGOUT_REDIRECT_URL = "login"

# Security for a tool on an operator's machine or behind a TLS proxy. Django's defaults
# already send nosniff, Referrer-Policy same-origin, COOP same-origin and
# X-Frame-Options DENY; these tighten the cookies.
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = 12 * 60 * 60  # a working day, not Django's two weeks
X_FRAME_OPTIONS = "DENY"
BALLAST_HTTPS = envbool("BALLAST_HTTPS", False)
SESSION_COOKIE_SECURE = BALLAST_HTTPS
CSRF_COOKIE_SECURE = BALLAST_HTTPS

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
# Static files (the API docs' Swagger UI) straight from the installed apps, no
# collectstatic step: WhiteNoise serves what the finders find.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Tokens for automation (hashed in the database), the session for the dashboard
        # (with CSRF checks on every unsafe request).
        "knox.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["dashboard.control.roles.ReadOrOperate"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "dashboard.control.api.errors.exception_handler",
}
REST_KNOX = {
    # Automation tokens live until revoked unless made with an expiry
    # (`manage.py apitoken create --expires-days N`).
    "TOKEN_TTL": None,
    "AUTO_REFRESH": False,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Ballast API",
    "DESCRIPTION": "Services, pods, desired state (weights, drains, policies), restarts and"
    " the audit log of the Ballast gRPC balancer.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

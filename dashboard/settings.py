"""Django settings for the Ballast dashboard, read from the environment in one place.

Variables (all optional unless noted):

- ``SECRET_KEY`` / ``SECRET_KEY_FILE`` — required unless ``DEBUG`` or ``BALLAST_DEV``.
- ``DEBUG`` — false by default.
- ``BALLAST_DEV`` — a laptop run: a random secret key per process when none is set.
- ``ALLOWED_HOSTS`` — comma-separated; loopback by default. A websocket's ``Origin``
  must be the page's own (scheme, host and port) on one of these hosts.
- ``CSRF_TRUSTED_ORIGINS`` — comma-separated ``scheme://host[:port]`` origins that differ
  from the host a request came to (a TLS proxy in front); same-origin needs none. They
  may open websockets too.
- ``BALLAST_HTTPS`` — served over HTTPS (behind a TLS proxy): cookies go over HTTPS only,
  plain HTTP is redirected to HTTPS and browsers are told to keep to HTTPS (HSTS).
- ``BALLAST_PROXY_SSL_HEADER`` — the header by which the TLS proxy in front says a request
  came over HTTPS with the value ``https`` (e.g. ``X-Forwarded-Proto``); unset: none is
  trusted. Set it only when the proxy always sets (or strips) that header.
- ``BALLAST_HSTS_SECONDS`` — the HSTS max-age with ``BALLAST_HTTPS``: a year by default
  (0 turns HSTS off); ``BALLAST_HSTS_PRELOAD`` — ask for the preload list (true).
- ``BALLAST_CLIENT_IP_HEADER`` — the header in which the reverse proxy in front puts the
  client's address (e.g. ``X-Forwarded-For``; its last item is taken, the one the proxy
  added); unset: the connection's peer address. Login lockouts count per address.
- ``BALLAST_LOGIN_FAILURE_LIMIT`` — failed logins, per account and per client address,
  that lock it out (5); ``BALLAST_LOGIN_COOLOFF_S`` — for how long (900 s). ``manage.py
  axes_reset`` (or ``axes_reset_username NAME``) unlocks earlier.
- ``DATABASE_URL`` — e.g. ``postgres://user:pass@host/db`` (``pip install 'ballast[postgres]'``);
  SQLite at ``BALLAST_DB_PATH`` (default ``db.sqlite3`` in the checkout) otherwise.
- ``REDIS_URL`` — the Redis channel layer; the in-memory layer (one process) otherwise.
- ``BALLAST_DASHBOARD_PROCESSES`` — how many dashboard processes run (default 1); the
  system checks use it to catch an in-memory channel layer shared by none of them.
- ``BALLAST_SERVICES`` — comma-separated names of the balancer services to show; each is
  the balancer cluster and the platform deployment of the same name.
- ``BALLAST_BALANCERS`` — the balancer replicas the collector watches, comma-separated
  ``id=host:port`` of their admin APIs (e.g. ``b0=127.0.0.1:9901,b1=10.0.0.2:9901``).
- ``BALLAST_PLATFORM`` — ``kubernetes``: pod facts, restarts and rollouts through the
  Kubernetes API (unset: no platform). ``BALLAST_KUBECONFIG`` (a kubeconfig file; else
  ``KUBECONFIG`` or ~/.kube/config, and in a pod its service account),
  ``BALLAST_KUBE_CONTEXT`` (its current context by default), ``BALLAST_KUBE_NAMESPACE``
  (the namespace of a service named without one: the context's, in a pod its own).
- ``BALLAST_BALANCERS_SERVICE`` — on Kubernetes, instead of ``BALLAST_BALANCERS``: the
  balancers' headless admin Service (``ballast/ballast-balancer-admin``); its
  EndpointSlices are the replicas, each named by its pod, followed as they come and go.
  ``BALLAST_BALANCERS_PORT``: the admin port's name or number (``admin``).
- ``BALLAST_POD_GONE_GRACE_S`` — an override on a pod that neither the platform nor any
  balancer has reported for this long ends (audited "pod gone"): 60 by default.
- ``BALLAST_ADMIN_TOKEN`` / ``BALLAST_ADMIN_TOKEN_FILE`` — the balancers' admin API token.
- ``BALLAST_ADMIN_CA_FILE`` — the balancers' admin API serves TLS: the CA (PEM) that signed
  its certificate. ``BALLAST_ADMIN_CERT_FILE`` + ``BALLAST_ADMIN_KEY_FILE``: a client
  certificate (admin ``tls.client_ca_file``, mTLS). ``BALLAST_ADMIN_SERVER_NAME``: the name
  its certificate carries when not the host of ``BALLAST_BALANCERS``. Plaintext when unset.
- ``BALLAST_COLLECTOR_INTERVAL_MS`` — how often frames are sent: 1000 by default, 250 at least.
- ``BALLAST_PREVIEW_HOT_CPU_M`` — a weight or drain preview warns when a pod would run above
  this CPU, in millicores (800); ``BALLAST_PREVIEW_MIN_READY`` — … or when fewer READY pods
  than this would take requests (2).
- ``BALLAST_OOM_GUARD_THRESHOLD_S`` — the OOM guard (a service's ``oom_guard``) restarts a pod
  whose predicted time to OOM falls under this many seconds: 120 by default.
  ``BALLAST_OOM_GUARD_COOLDOWN_S``: a pod it acted on is left alone this long (300).
  ``BALLAST_OOM_GUARD_MIN_READY``: the other pods that must stay ready (0: all but one).
"""

from __future__ import annotations

import re
import secrets
from datetime import timedelta
from pathlib import Path

from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from dashboard.env import (
    channel_layer_settings,
    database_settings,
    envaddresses,
    envbool,
    envheader,
    envint,
    envkubernetes,
    envlist,
    envplatform,
    envport,
    envsecret,
    envservice,
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
BALLAST_BALANCERS = envaddresses("BALLAST_BALANCERS", "", key=SERVICE_NAME)
BALLAST_ADMIN_TOKEN = envsecret("BALLAST_ADMIN_TOKEN")
# The platform (None, or "kubernetes" with its client settings), and on Kubernetes the
# admin Service whose EndpointSlices are the balancer replicas.
BALLAST_PLATFORM = envplatform()
BALLAST_KUBERNETES = envkubernetes() if BALLAST_PLATFORM == "kubernetes" else None
BALLAST_BALANCERS_SERVICE = envservice("BALLAST_BALANCERS_SERVICE")
BALLAST_BALANCERS_PORT = envport("BALLAST_BALANCERS_PORT", "admin")
if BALLAST_BALANCERS_SERVICE and BALLAST_PLATFORM != "kubernetes":
    raise ImproperlyConfigured(
        "BALLAST_BALANCERS_SERVICE is set but BALLAST_PLATFORM is not kubernetes: set"
        " BALLAST_PLATFORM=kubernetes, or list the replicas in BALLAST_BALANCERS"
    )
if BALLAST_BALANCERS_SERVICE and BALLAST_BALANCERS:
    raise ImproperlyConfigured(
        "BALLAST_BALANCERS and BALLAST_BALANCERS_SERVICE are both set: set one (a static"
        " list, or the admin Service whose endpoints are the replicas)"
    )
BALLAST_POD_GONE_GRACE_S = envint("BALLAST_POD_GONE_GRACE_S", 60, minimum=1)
BALLAST_ADMIN_TLS = envtls("BALLAST_ADMIN")
BALLAST_COLLECTOR_INTERVAL_MS = envint("BALLAST_COLLECTOR_INTERVAL_MS", 1000, minimum=250)
BALLAST_PREVIEW_HOT_CPU_M = envint("BALLAST_PREVIEW_HOT_CPU_M", 800, minimum=0)
BALLAST_PREVIEW_MIN_READY = envint("BALLAST_PREVIEW_MIN_READY", 2, minimum=0)
BALLAST_OOM_GUARD_THRESHOLD_S = envint("BALLAST_OOM_GUARD_THRESHOLD_S", 120, minimum=1)
BALLAST_OOM_GUARD_COOLDOWN_S = envint("BALLAST_OOM_GUARD_COOLDOWN_S", 300, minimum=1)
BALLAST_OOM_GUARD_MIN_READY = envint("BALLAST_OOM_GUARD_MIN_READY", 0, minimum=0)

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
    # Login attempts counted per account and per client address, with a lockout.
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy on every response (CONTENT_SECURITY_POLICY below).
    "csp.middleware.CSPMiddleware",
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
    # Last, as django-axes asks: turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out account or address before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
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
                # ballast_css: the stylesheets' URLs (no inline style: see CSP below).
                "dashboard.app.assets.stylesheets",
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
SECURE_SSL_REDIRECT = BALLAST_HTTPS
# A year is what the preload list asks for; a first rollout may start lower.
_HSTS_SECONDS = envint("BALLAST_HSTS_SECONDS", 365 * 24 * 3600, minimum=0)
SECURE_HSTS_SECONDS = _HSTS_SECONDS if BALLAST_HTTPS else 0
# The dashboard's own host and its subdomains, never the parent domain.
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = envbool("BALLAST_HSTS_PRELOAD", True)
_PROXY_SSL_HEADER = envheader("BALLAST_PROXY_SSL_HEADER")
SECURE_PROXY_SSL_HEADER = (_PROXY_SSL_HEADER, "https") if _PROXY_SSL_HEADER else None

# Strict: no inline script or style anywhere (the pages load their scripts and the one
# stylesheet from /assets/), nothing from other origins, no framing, no plugins.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        # data: for the favicon, drawn inline in base.html.
        "img-src": [SELF, "data:"],
        # The service page's websocket: 'self' matches ws:// and wss:// of this host.
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# Login lockout (django-axes): N failures per account or per client address lock that
# account or address out for the cool-off, even with the right password. Attempts
# during a lockout do not prolong it: a stranger cannot keep an operator out for good
# by guessing on, only for a cool-off after each burst of N.
AXES_FAILURE_LIMIT = envint("BALLAST_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(seconds=envint("BALLAST_LOGIN_COOLOFF_S", 900, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_TEMPLATE = "registration/locked.html"
AXES_HTTP_RESPONSE_CODE = 429
# Audits each failure and each lockout (AuditEvent) besides counting them.
AXES_HANDLER = "dashboard.app.signins.AuditedAxesHandler"
AXES_USERNAME_CALLABLE = "dashboard.app.signins.attempted_username"
AXES_CLIENT_IP_CALLABLE = "dashboard.app.signins.client_ip"
# No banner at every start: the audit log and axes' warnings say what happened.
AXES_VERBOSE = False
BALLAST_CLIENT_IP_HEADER = envheader("BALLAST_CLIENT_IP_HEADER")

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

"""Test settings: the real settings, on a throwaway key, SQLite and the in-memory layer.

No secret lives in the repository: ``BALLAST_DEV`` makes a random key per process. The
database and channel layer are pinned so a developer's DATABASE_URL or REDIS_URL never
reaches the suite (the Redis test sets its own).
"""

from __future__ import annotations

import os

os.environ.setdefault("BALLAST_DEV", "1")

from dashboard.settings import *  # noqa: F403

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
BALLAST_SERVICES = ["inventory", "payments"]
BALLAST_DASHBOARD_PROCESSES = 1
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
# Fast hashing: the tests log users in by the hundred, not attackers.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

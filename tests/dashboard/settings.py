"""Test settings: the real settings, on a throwaway key, a throwaway SQLite file and the
in-memory layer.

No secret lives in the repository: ``BALLAST_DEV`` makes a random key per process. The
database and channel layer are pinned so a developer's DATABASE_URL or REDIS_URL never
reaches the suite (the Redis test sets its own).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("BALLAST_DEV", "1")

from dashboard.env import database_settings
from dashboard.settings import *  # noqa: F403

# SQLite as the dashboard runs it (dashboard.env.database_settings: writers wait for each
# other), on a file in a directory of this process's own: Django's in-memory test database
# shares one cache between threads, whose table locks fail a concurrent writer at once.
_DB_DIR = tempfile.mkdtemp(prefix="ballast-test-db-")
atexit.register(shutil.rmtree, _DB_DIR, ignore_errors=True)
DATABASES = {"default": database_settings("", Path(_DB_DIR) / "db.sqlite3")}
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
BALLAST_SERVICES = ["inventory", "payments"]
BALLAST_DASHBOARD_PROCESSES = 1
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
# Fast hashing: the tests log users in by the hundred, not attackers.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

"""Production settings, in a fresh process as `manage.py` runs them: `check --deploy` is
clean with HTTPS on behind a TLS proxy, and says what is missing otherwise."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "dash.example.com",
    "BALLAST_HTTPS": "1",
    "BALLAST_PROXY_SSL_HEADER": "X-Forwarded-Proto",
}


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BALLAST_", "SECRET_KEY", "DJANGO_", "REDIS_", "DATABASE_"))
        and k not in ("DEBUG", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS")
    }
    base["BALLAST_DB_PATH"] = ":memory:"
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env={**base, **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def setting(name: str, **env: str) -> str:
    """The repr of one setting as dashboard/settings.py computes it from `env`."""
    code = f"import dashboard.settings as s; print(repr(s.{name}))"
    result = run("-c", code, **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_check_deploy_is_clean_with_https_behind_a_tls_proxy() -> None:
    result = run("manage.py", "check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_https_turns_on_the_redirect_hsts_and_secure_cookies() -> None:
    names = (
        "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
        "SECURE_HSTS_SECONDS", "SECURE_PROXY_SSL_HEADER",
    )  # fmt: skip
    values = [setting(name, **PRODUCTION) for name in names]
    assert values == [
        "True",
        "True",
        "True",
        str(365 * 24 * 3600),
        "('HTTP_X_FORWARDED_PROTO', 'https')",
    ]
    assert setting("SECURE_HSTS_SECONDS", **PRODUCTION, BALLAST_HSTS_SECONDS="3600") == "3600"


def test_plain_http_sets_no_hsts_and_trusts_no_proxy_header() -> None:
    env = {"SECRET_KEY": PRODUCTION["SECRET_KEY"]}
    assert setting("SECURE_HSTS_SECONDS", **env) == "0"
    assert setting("SECURE_SSL_REDIRECT", **env) == "False"
    assert setting("SECURE_PROXY_SSL_HEADER", **env) == "None"


def test_https_without_the_proxy_header_is_a_warning() -> None:
    env = {**PRODUCTION, "BALLAST_PROXY_SSL_HEADER": ""}
    result = run("manage.py", "check", "--deploy", "--fail-level", "WARNING", **env)
    assert result.returncode != 0
    assert "ballast.W003" in result.stderr
    assert "BALLAST_PROXY_SSL_HEADER" in result.stderr


def test_a_bad_proxy_header_is_one_line_naming_it() -> None:
    result = run(
        "manage.py", "check", **PRODUCTION | {"BALLAST_PROXY_SSL_HEADER": "X-Proto: https"}
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "manage.py: BALLAST_PROXY_SSL_HEADER='X-Proto: https': not a header name"
        " (e.g. X-Forwarded-Proto)"
    ]

"""`manage.py apitoken create|list|revoke`: API tokens for automation (django-rest-knox).

A token is shown once, when it is made; the database keeps only its hash and its first
characters (the key prefix), which `list` shows and `revoke` takes.
"""

from __future__ import annotations

from argparse import ArgumentParser
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from knox.models import AuthToken

from dashboard.control.roles import role_of

# Ten years: longer is a token that never expires, which leaving the option out says.
MAX_EXPIRES_DAYS = 3650


class Command(BaseCommand):
    help = "Create, list and revoke API tokens (Authorization: Token <token>)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        commands = parser.add_subparsers(dest="command", required=True)
        create = commands.add_parser("create", help="make a token for a user; shown once")
        create.add_argument("--user", required=True, help="the username the token acts as")
        create.add_argument(
            "--expires-days", type=int, default=None,
            help=f"expire after N days, 1 to {MAX_EXPIRES_DAYS} (default: never)",
        )  # fmt: skip
        listing = commands.add_parser("list", help="the tokens: key prefix, user, expiry")
        listing.add_argument("--user", default=None, help="only this user's tokens")
        revoke = commands.add_parser("revoke", help="revoke the token(s) with this key prefix")
        revoke.add_argument("prefix", help="the key prefix `list` shows")

    def handle(self, *args: Any, **options: Any) -> None:
        command = options["command"]
        if command == "create":
            self.create(options["user"], options["expires_days"])
        elif command == "list":
            self.list(options["user"])
        else:
            self.revoke(options["prefix"])

    def create(self, username: str, expires_days: int | None) -> None:
        if expires_days is not None and not 1 <= expires_days <= MAX_EXPIRES_DAYS:
            raise CommandError(
                f"--expires-days must be from 1 to {MAX_EXPIRES_DAYS} (ten years);"
                " leave it out for a token that never expires"
            )
        user = _user(username)
        expiry = timedelta(days=expires_days) if expires_days is not None else None
        instance, token = AuthToken.objects.create(user=user, expiry=expiry)
        until = f"until {instance.expiry:%Y-%m-%d %H:%M} UTC" if instance.expiry else "no expiry"
        self.stdout.write(
            f"Token for {user.get_username()} ({role_of(user)}, {until}), key prefix"
            f" {instance.token_key}:\n{token}\n"
            "It will not be shown again: store it now. Send it as `Authorization: Token <token>`."
        )

    def list(self, username: str | None) -> None:
        tokens = AuthToken.objects.select_related("user").order_by("created")
        if username is not None:
            tokens = tokens.filter(user=_user(username))
        rows = [
            (t.token_key, t.user.get_username(), f"{t.created:%Y-%m-%d %H:%M}", _expiry(t))
            for t in tokens
        ]
        if not rows:
            self.stdout.write("No API tokens.")
            return
        self.stdout.write(f"{'PREFIX':<16} {'USER':<20} {'CREATED':<17} EXPIRES")
        for prefix, user, created, expires in rows:
            self.stdout.write(f"{prefix:<16} {user:<20} {created:<17} {expires}")

    def revoke(self, prefix: str) -> None:
        tokens = AuthToken.objects.filter(token_key=prefix)
        count = tokens.count()
        if count == 0:
            raise CommandError(
                f"no API token has the key prefix {prefix!r}: `apitoken list` shows them"
            )
        tokens.delete()
        self.stdout.write(f"Revoked {count} token{'s' if count > 1 else ''} with prefix {prefix}.")


def _user(username: str) -> Any:
    try:
        return get_user_model().objects.get_by_natural_key(username)
    except get_user_model().DoesNotExist:
        raise CommandError(f"no user {username!r}: create it first (createsuperuser)") from None


def _expiry(token: AuthToken) -> str:
    return f"{token.expiry:%Y-%m-%d %H:%M}" if token.expiry else "never"

#!/usr/bin/env python
"""Django's command-line utility for the Ballast dashboard."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line
    from redis.exceptions import ConnectionError as RedisConnectionError

    from dashboard.env import one_line

    try:
        # Settings first: a bad or missing variable (SECRET_KEY, REDIS_URL, ...) is one
        # line naming it, not Django's traceback from deep inside the command.
        from django.conf import settings

        settings.INSTALLED_APPS  # noqa: B018 -- loads the settings
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as err:
        sys.exit(f"manage.py: {one_line(err)}")
    except RedisConnectionError as err:  # runcollector with REDIS_URL's server down
        from dashboard.preflight import channel_layer_redis_url, redis_unreachable

        sys.exit(f"manage.py: {redis_unreachable(channel_layer_redis_url() or '?', err)}")


if __name__ == "__main__":
    main()

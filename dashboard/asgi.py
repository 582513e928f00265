"""The ASGI application: Django for HTTP, Channels for websockets.

Websockets pass the Origin check (the page must come from the dashboard's own origin:
scheme, host and port; see ``app/origins.py``) and then the session: the consumer sees
``scope["user"]`` and refuses anonymous ones.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
# Set Django up before anything imports models (consumers, auth middleware).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from dashboard.app.origins import SameOriginValidator  # noqa: E402
from dashboard.app.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

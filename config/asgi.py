"""ASGI entry point: Django for HTTP, the session consumer for WebSockets.

WebSockets pass origin validation (ALLOWED_HOSTS) and Django session auth, or an API token
(``Authorization: Bearer``, realtime/tokens.py) for clients without a browser. In embedded mode
(WORKFLOW_EXECUTOR=embedded) the process also runs sessions: the executor starts on the
first connection or request, or at lifespan start-up under servers that send it (uvicorn),
and stops at lifespan shutdown: its runs are left, leases released, to the next executor.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from realtime.agui.cutoff import CutOffSlowStreams  # noqa: E402
from realtime.auth import socket_auth_stack  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402
from realtime.tokens import BearerWithoutOrigin, TokenAuthMiddleware  # noqa: E402
from workflows import tracing  # noqa: E402
from workflows.worker import ensure_embedded_executor, stop_embedded_executor  # noqa: E402

router = ProtocolTypeRouter(
    {
        "http": CutOffSlowStreams(django_asgi_app),
        "websocket": BearerWithoutOrigin(
            checked=AllowedHostsOriginValidator(
                socket_auth_stack(TokenAuthMiddleware(URLRouter(websocket_urlpatterns)))
            ),
            with_token=TokenAuthMiddleware(URLRouter(websocket_urlpatterns)),
        ),
    }
)


# OpenTelemetry's ASGI server spans (HTTP and WebSocket), when tracing is on (workflows.tracing).
router = tracing.instrument_asgi(router)


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                ensure_embedded_executor()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await stop_embedded_executor()
                await send({"type": "lifespan.shutdown.complete"})
                return
    ensure_embedded_executor()
    await router(scope, receive, send)

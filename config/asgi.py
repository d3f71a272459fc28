"""ASGI entry point: HTTP goes to Django, WebSockets to the chat consumer."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_asgi_application()

import sys  # noqa: E402

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  (needs Django set up)
from django.conf import settings  # noqa: E402

from chat.replies import shutdown  # noqa: E402
from config import (  # noqa: E402
    autobahn_debug,
    backpressure,
    compression,
    frame_writer,
    gc_tuning,
    inbox,
    shared_frames,
    transport,
)
from config.logging import install_access_log  # noqa: E402
from consumers.auth import socket_auth  # noqa: E402
from consumers.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": socket_auth(URLRouter(websocket_urlpatterns)),
    }
)

if "daphne.server" in sys.modules:
    transport.install()
    autobahn_debug.install()
    inbox.install()  # before frame_writer, which wraps create_application
    frame_writer.install()
    shared_frames.install()  # before backpressure, whose bound is checked first
    backpressure.install(settings.CHAT_MAX_SOCKET_BUFFER_BYTES)
    backpressure.limit_incoming(settings.CHAT_MAX_FRAME_BYTES)
    if settings.CHAT_WEBSOCKET_COMPRESSION:
        compression.install()
    install_access_log()
    shutdown.install()  # SIGTERM stores every running reply as interrupted (issue 15)
    gc_tuning.tune()  # last: what was made until now is frozen (config/gc_tuning.py)

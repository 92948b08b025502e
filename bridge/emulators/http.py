"""The emulators' HTTP server. It lives in `bridge.http.server` (the admin API uses it too);
this module keeps the emulators' imports working."""

from bridge.http.server import (
    HANG,
    Handler,
    Hang,
    HttpServer,
    RawReply,
    Reply,
    Request,
    Response,
    ServerStats,
    json_response,
    text_response,
    unauthorized,
)

__all__ = [
    "HANG",
    "Handler",
    "Hang",
    "HttpServer",
    "RawReply",
    "Reply",
    "Request",
    "Response",
    "ServerStats",
    "json_response",
    "text_response",
    "unauthorized",
]

"""The HTTP front end: one listener (hypercorn on trio, `server.HttpListener`) serving one
Starlette app (`asgi.build_app`) made of the admin routes (bridge/admin.py), the SMSGate webhook
receiver (`webhooks`) and the send API (`api`)."""

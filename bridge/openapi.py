"""OpenAPI 3.0 description of the HTTP port (served at ``GET /api/openapi.json``): the admin API,
the SMSGate webhook receiver and the send API (``/api/v1/``).

A test (tests/ops/test_admin_api.py) checks that every route the assembled app serves is here and
that nothing here is missing from it.
"""

from __future__ import annotations

from typing import Any

from . import __version__


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema or {"type": "object"}}},
    }


UNAUTHORIZED = {"401": {"$ref": "#/components/responses/Unauthorized"}}
CHANNEL_PARAM = {
    "name": "channel",
    "in": "path",
    "required": True,
    "description": "DEVICE:CHANNEL as in the config, e.g. goip1:3",
    "schema": {"type": "string", "example": "goip1:3"},
}


def spec() -> dict[str, Any]:
    channel_action = {
        "channel": {"type": "string"},
        "state": {"type": "string", "enum": ["ready", "sending", "cooldown", "quarantine", "paused"]},
        "paused": {"type": "boolean"},
        "busy": {"type": "boolean", "description": "a message is in progress"},
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "smpp-bridge HTTP API",
            "version": __version__,
            "description": (
                "Operations API of smpp-bridge. /metrics, /healthz and /readyz are open; every "
                "/api/ endpoint needs the admin token when one is configured. Errors are JSON "
                "objects with `error` and, where useful, a `hint` saying what to do next. "
                "/api/v1/ is the send API for applications: HTTP Basic auth as an ESME."
            ),
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "esme": {"type": "http", "scheme": "basic",
                         "description": "an ESME's system_id and its api_key (or password)"},
                "adminToken": {"type": "apiKey", "in": "header", "name": "X-Admin-Token"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}, "hint": {"type": "string"},
                                   "field": {"type": "string", "description": "the request field at fault"}},
                },
                "SendRequest": SEND_REQUEST,
                "Event": {
                    "type": "object",
                    "properties": {
                        "at": {"type": "string", "format": "date-time"},
                        "state": {"type": "string"},
                        "detail": {"type": "string"},
                    },
                },
                "Message": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "description": "message_id as in submit_sm_resp"},
                        "esme": {"type": "string"},
                        "state": {"type": "string"},
                        "network_stat": {"type": "string", "nullable": True,
                                         "description": "while sent: the network's newest intermediate receipt (ENROUTE, ACCEPTD)"},
                        "source_addr": {"type": "string"},
                        "destination_addr": {"type": "string"},
                        "text": {"type": "string", "nullable": True},
                        "error": {"type": "string", "nullable": True},
                        "created_at": {"type": "string", "format": "date-time"},
                        "final_at": {"type": "string", "format": "date-time", "nullable": True},
                    },
                },
                "Part": {
                    "type": "object",
                    "properties": {
                        "seq": {"type": "integer"},
                        "total": {"type": "integer"},
                        "state": {"type": "string"},
                        "channel": {"type": "string"},
                        "device_ref": {"type": "string", "nullable": True},
                        "error": {"type": "string", "nullable": True},
                    },
                },
                "ChannelAction": {"type": "object", "properties": channel_action},
                "ReloadResult": {
                    "type": "object",
                    "properties": {
                        "ok": {"type": "boolean"},
                        "errors": {"type": "array", "items": {"type": "string"}},
                        "applied": {"type": "array", "items": {"type": "string"}},
                        "restart_required": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"section": {"type": "string"}, "why": {"type": "string"}},
                            },
                        },
                        "unchanged": {"type": "array", "items": {"type": "string"}},
                        "binds_closed": {"type": "integer"},
                        "connectors": {
                            "type": "object",
                            "description": "upstream connectors the reload changed (names)",
                            "properties": {
                                k: {"type": "array", "items": {"type": "string"}}
                                for k in ("added", "removed", "rebound", "retuned", "bound", "failed")
                            },
                        },
                    },
                },
            },
            "responses": {"Unauthorized": _error("missing or wrong admin token")},
        },
        "security": [{"bearer": []}, {"adminToken": []}],
        "paths": {
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (text exposition format)",
                    "security": [],
                    "responses": {"200": {"description": "metrics", "content": {"text/plain": {}}}},
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness: the process answers",
                    "security": [],
                    "responses": {"200": _json("alive")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: started, store readable, SMPP listening",
                    "security": [],
                    "responses": {"200": _json("ready"), "503": _json("not ready; `checks` says why")},
                }
            },
            "/api/openapi.json": {
                "get": {"summary": "This description", "responses": {"200": _json("OpenAPI 3"), **UNAUTHORIZED}}
            },
            "/api/status": {
                "get": {
                    "summary": "ESMEs and their binds, devices and channels, queues per route, store",
                    "responses": {"200": _json("status"), **UNAUTHORIZED},
                }
            },
            "/api/messages": {
                "get": {
                    "summary": "Messages to a number, newest first, each with its event history",
                    "parameters": [
                        {"name": "number", "in": "query", "required": True,
                         "description": "international format; write + as %2B",
                         "schema": {"type": "string", "example": "+4917012345678"}},
                        {"name": "limit", "in": "query",
                         "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 20}},
                    ],
                    "responses": {"200": _json("messages"), "400": _error("bad number or limit"), **UNAUTHORIZED},
                }
            },
            "/api/messages/{message_id}": {
                "get": {
                    "summary": "One message with its whole event history and device parts",
                    "parameters": [{"name": "message_id", "in": "path", "required": True,
                                    "schema": {"type": "string", "example": "0000000042"}}],
                    "responses": {
                        "200": _json("the message", {
                            "type": "object",
                            "properties": {
                                "message": {"$ref": "#/components/schemas/Message"},
                                "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                                "parts": {"type": "array", "items": {"$ref": "#/components/schemas/Part"}},
                            },
                        }),
                        "404": _error("no such message"),
                        **UNAUTHORIZED,
                    },
                }
            },
            "/api/optouts": {
                "get": {"summary": "The opt-out list", "responses": {"200": _json("opt-outs"), **UNAUTHORIZED}},
                "post": {
                    "summary": "Add a number to the opt-out list",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["number"],
                        "properties": {"number": {"type": "string", "example": "+4917012345678"}}}}}},
                    "responses": {"201": _json("added"), "400": _error("not a phone number"), **UNAUTHORIZED},
                },
            },
            "/api/optouts/{number}": {
                "delete": {
                    "summary": "Remove a number from the opt-out list",
                    "parameters": [{"name": "number", "in": "path", "required": True,
                                    "description": "write + as %2B", "schema": {"type": "string"}}],
                    "responses": {"200": _json("removed"), "404": _error("not on the list"), **UNAUTHORIZED},
                }
            },
            "/api/channels/{channel}/pause": {
                "post": {
                    "summary": "Take no new messages on a channel (one in progress finishes)",
                    "parameters": [CHANNEL_PARAM],
                    "responses": {"200": _json("paused", {"$ref": "#/components/schemas/ChannelAction"}),
                                  "404": _error("no such channel"), **UNAUTHORIZED},
                }
            },
            "/api/channels/{channel}/resume": {
                "post": {
                    "summary": "Let a paused channel send again",
                    "parameters": [CHANNEL_PARAM],
                    "responses": {"200": _json("resumed", {"$ref": "#/components/schemas/ChannelAction"}),
                                  "404": _error("no such channel"), **UNAUTHORIZED},
                }
            },
            "/api/channels/{channel}/drain": {
                "post": {
                    "summary": "Pause, and answer once the message in progress is done",
                    "parameters": [CHANNEL_PARAM, {"name": "timeout", "in": "query",
                                                   "schema": {"type": "number", "default": 60, "maximum": 600}}],
                    "responses": {
                        "200": _json("drained: paused with nothing in progress",
                                     {"$ref": "#/components/schemas/ChannelAction"}),
                        "202": _json("paused, a message still in progress after the timeout"),
                        "404": _error("no such channel"),
                        **UNAUTHORIZED,
                    },
                }
            },
            "/api/reload": {
                "post": {
                    "summary": "Re-read the config file and apply what can change while running (as SIGHUP)",
                    "responses": {
                        "200": _json("applied", {"$ref": "#/components/schemas/ReloadResult"}),
                        "422": _json("the file has errors; nothing changed",
                                     {"$ref": "#/components/schemas/ReloadResult"}),
                        **UNAUTHORIZED,
                    },
                }
            },
            "/api/pdu-logs": {
                "get": {"summary": "PDU log files per ESME and day", "responses": {"200": _json("files"), **UNAUTHORIZED}}
            },
            "/api/pdu-logs/{esme}/{date}": {
                "get": {
                    "summary": "Download one PDU log (JSON lines)",
                    "parameters": [
                        {"name": "esme", "in": "path", "required": True, "schema": {"type": "string"}},
                        {"name": "date", "in": "path", "required": True,
                         "schema": {"type": "string", "format": "date", "example": "2024-05-01"}},
                    ],
                    "responses": {
                        "200": {"description": "the file", "content": {"application/x-ndjson": {}}},
                        "404": _error("no such file"),
                        **UNAUTHORIZED,
                    },
                }
            },
            **_send_api_paths(),
            "/webhooks/smsgate/{device}": {
                "post": {
                    "summary": "An SMSGate phone's webhook (sms:received, sms:sent, sms:delivered, sms:failed)",
                    "description": "Called by the phone, not by people: no admin token and no Host check. "
                    "X-Timestamp and X-Signature (hex HMAC-SHA256 of body + timestamp with the device's "
                    "webhook_secret) authenticate it. An inbound SMS is answered 200 only once it is stored.",
                    "security": [],
                    "parameters": [
                        {"name": "device", "in": "path", "required": True, "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": _json("taken (or a repeat of an event already taken)"),
                        "400": _json("authentic, but the body is malformed"),
                        "401": _json("missing, wrong or stale signature"),
                        "403": _json("no webhook_secret configured for this device"),
                        "404": _error("no smsgate device of that name"),
                        "503": _json("inbound SMS not stored yet; the phone retries"),
                    },
                }
            },
        },
    }


SEND_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["to", "text"],
    "properties": {
        "to": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 100}],
               "description": "destination number(s), international format", "example": "+4917012345678"},
        "text": {"type": "string", "maxLength": 10000,
                 "description": "any Unicode; sent as GSM-7 when it fits, else UCS-2, split into parts as needed"},
        "from": {"type": "string", "maxLength": 20, "description": "sender number or name (if the device honours it)"},
        "schedule_at": {"type": "string", "format": "date-time", "description": "send not before (with offset)"},
        "validity": {"type": "integer", "minimum": 60, "maximum": 2592000,
                     "description": "seconds the message may wait for a device, from when it may first go"},
        "priority": {"type": "integer", "minimum": 0, "maximum": 3, "default": 0},
        "flash": {"type": "boolean", "default": False, "description": "class 0 (shown at once, not stored)"},
        "receipt": {"type": "boolean", "default": False, "description": "want a delivery receipt"},
        "reference": {"type": "string", "maxLength": 64, "description": "yours, echoed in the answer"},
        "idempotency_key": {"type": "string", "description": "as the Idempotency-Key header"},
    },
}


def _send_api_paths() -> dict[str, Any]:
    esme = [{"esme": []}]
    auth = {"401": _error("missing or wrong credentials"), "403": _error("address not in the ESME's allowed_ips")}
    message_id = {"name": "message_id", "in": "path", "required": True,
                  "schema": {"type": "string", "example": "0000000042"}}
    body = {"$ref": "#/components/schemas/SendRequest"}
    return {
        "/api/v1/messages": {
            "post": {
                "summary": "Send an SMS (to one or more numbers); 201 only after the durable commit",
                "security": esme,
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                "description": "a retry with the same key gets the first answer, never a second SMS",
                                "schema": {"type": "string", "maxLength": 200}}],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": body},
                    "application/x-www-form-urlencoded": {"schema": body},
                }},
                "responses": {
                    "201": _json("stored: the ids (also for a replay, with Idempotent-Replayed: true)", {
                        "type": "object",
                        "properties": {
                            "messages": {"type": "array", "items": {"type": "object", "properties": {
                                "id": {"type": "string"}, "to": {"type": "string"}, "parts": {"type": "integer"}}}},
                            "refused": {"type": "array", "items": {"type": "object"}},
                            "reference": {"type": "string"},
                        },
                    }),
                    "400": _error("a bad field (named in `field`)"),
                    **auth,
                    "413": _error("body over 64 KiB"),
                    "415": _error("neither JSON nor a form"),
                    "422": _error("opted-out number, no route, or an Idempotency-Key reused for another body"),
                    "429": _error("over the ESME's throughput; see Retry-After"),
                    "503": _error("queue full or the store could not commit; nothing stored; see Retry-After"),
                },
            }
        },
        "/api/v1/messages/{message_id}": {
            "get": {
                "summary": "One of your messages: state, parts, events, error",
                "security": esme,
                "parameters": [message_id],
                "responses": {"200": _json("the message"), **auth, "404": _error("no such message of yours")},
            },
            "delete": {
                "summary": "Cancel a message still waiting",
                "security": esme,
                "parameters": [message_id],
                "responses": {"200": _json("cancelled"), **auth, "404": _error("no such message of yours"),
                              "409": _error("not waiting any more")},
            },
        },
    }

"""Token checks of the admin API, without a network: only the exact token opens it."""

from __future__ import annotations

import pytest

import bridge.admin as admin
from bridge.config import Secret
from bridge.http.server import Request

TOKEN = "a-long-admin-token-0123456789"


def api() -> admin.AdminApi:
    async def nothing():  # pragma: no cover - no request reaches a handler here
        return {}

    return admin.AdminApi(admin.AdminParts(token=Secret(TOKEN), registry=None, store=None, status=nothing,
                                           readiness=dict, channels=lambda: None, reload=nothing))


def request(**headers: str) -> Request:
    return Request("GET", "/api/status", "/api/status", {}, {k.replace("_", "-"): v for k, v in headers.items()},
                   b"", peer="127.0.0.1:5555")


@pytest.mark.parametrize(
    "headers, ok",
    [
        ({"authorization": f"Bearer {TOKEN}"}, True),
        ({"authorization": f"bearer {TOKEN}"}, True),
        ({"x_admin_token": TOKEN}, True),
        ({"authorization": f"Bearer {TOKEN}x"}, False),
        ({"authorization": f"Bearer {TOKEN[:-1]}"}, False),
        ({"authorization": "Bearer "}, False),
        ({"x_admin_token": ""}, False),
    ],
)
def test_only_the_exact_token_is_accepted(headers, ok):
    server = api()
    if ok:
        server._check_auth(request(**headers))
    else:
        with pytest.raises(admin.ApiError) as err:
            server._check_auth(request(**headers))
        assert err.value.status == 401


@pytest.mark.parametrize("headers", [{}, {"authorization": f"Basic {TOKEN}"}])
def test_missing_token_is_refused(headers):
    server = api()
    with pytest.raises(admin.ApiError) as err:
        server._check_auth(request(**headers))
    assert err.value.status == 401 and err.value.error == "missing admin token"

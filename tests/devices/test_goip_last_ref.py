"""A GoIP's lines asking for their status slot at the same moment share one request.

When 512 lines start sending, every line first reads the id in its status slot (``last_ref``:
the id an ambiguous send is later reconciled against). Each asked send_status.xml on its own,
one request per line, since only an answer requested from that moment on will do; callers of
the same moment now join the request before it leaves."""

from __future__ import annotations

import trio

from bridge.devices.goip_http.driver import GoipHttpDriver
from bridge.devices.goip_http.emulator import GoipEmulator


async def test_last_ref_of_every_line_at_once_is_one_request_and_never_an_older_answer(nursery):
    emu = GoipEmulator(lines=4, username="admin", password="pw", send_duration=0.05, seed=7)
    port = await nursery.start(emu.serve)
    d = GoipHttpDriver("g", f"http://127.0.0.1:{port}", "admin", "pw", 4, timeout=2.0, status_max_age=0.0)
    try:
        refs = {ch: (await d.send(ch, "+1", "x")).ref for ch in ("1", "3")}
        before = emu.server.stats.requests
        got: dict[str, str | None] = {}

        async def ask(ch: str) -> None:
            got[ch] = await d.last_ref(ch)

        async with trio.open_nursery() as n:
            for ch in d.channels:
                n.start_soon(ask, ch)
        assert emu.server.stats.requests == before + 1  # 4 lines, 1 request
        assert got == {"1": refs["1"].lower(), "2": "", "3": refs["3"].lower(), "4": ""}
        # A send after that answer: the next last_ref asks again and sees it.
        new = (await d.send("2", "+1", "y")).ref
        assert await d.last_ref("2") == new.lower()
        assert emu.server.stats.requests == before + 3
    finally:
        await d.aclose()

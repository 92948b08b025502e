"""Fixtures of the store's tests: a Store on a temporary file with a clock the test moves."""

import pytest

from bridge.store import Store


class Clock:
    """A wall clock that stands still until a test moves ``now``."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path, nursery):
    s = Store(tmp_path / "b.sqlite3", clock=Clock(), partial_timeout=600)
    s.open()
    await nursery.start(s.run)
    yield s
    s.close()

"""``freeze_gc``: once listening, what start-up allocated is out of the collector's sight."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import gc, sys, trio, hub

async def main():
    server = hub.Server(freeze_gc=sys.argv[1] == "on")
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, "127.0.0.1", 0)
        print(gc.get_freeze_count())
        nursery.cancel_scope.cancel()

trio.run(main)
"""


@pytest.mark.parametrize(("flag", "frozen"), [("on", True), ("off", False)])
def test_freeze_gc(flag: str, frozen: bool) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, flag], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert (int(done.stdout) > 0) is frozen

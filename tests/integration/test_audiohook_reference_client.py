"""Genesys' own AudioHook reference client against the real daemon, when one is at hand.

The reference client (purecloudlabs/audiohook-reference-implementation, ``client/``) is not on
the npm registry, and this repository neither vendors it nor builds it. Point
``AUDIOHOOK_REFERENCE_CLIENT`` at a ``client/`` folder where it was built by hand (its
``node_modules`` installed, ``npx ts-node`` working; docs/sources.md says how it was run) and
this test drives it: a stereo 8 kHz WAV with the specification's sample credentials must be
scored on both channels and close cleanly, and a wrong API key must be refused. Without the
variable the test is skipped.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import uuid
from pathlib import Path

import pytest

from tests.audiohook_client import SAMPLE_API_KEY, SAMPLE_CLIENT_SECRET

from .conftest import Subscriber

CLIENT = os.environ.get("AUDIOHOOK_REFERENCE_CLIENT")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CLIENT, reason="AUDIOHOOK_REFERENCE_CLIENT is not set (a hand-built reference client)"
    ),
    pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) for a pty"),
]

AUDIOHOOK = {
    "audiohook": {
        "enabled": True,
        "api_key": SAMPLE_API_KEY,
        "client_secret": SAMPLE_CLIENT_SECRET,
    }
}
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


async def run_reference_client(url: str, *args: str) -> tuple[int, str]:
    """``npx ts-node src/index.ts --uri URL ARGS`` under a pseudo-terminal (it sets raw mode)."""
    command = " ".join(["npx", "ts-node", "src/index.ts", "--uri", url, *args])
    proc = await asyncio.create_subprocess_exec(
        "script",
        "-qec",
        command,
        "/dev/null",
        cwd=CLIENT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, _ANSI.sub("", out.decode(errors="replace"))


async def test_reference_client_streams_a_stereo_call(make_daemon, fixtures_dir):
    assert CLIENT and (Path(CLIENT) / "src" / "index.ts").exists(), CLIENT
    daemon = await make_daemon(sources=AUDIOHOOK)
    url = f"ws://127.0.0.1:{daemon.port}/audiohook"
    wav = fixtures_dir / "speech_stereo_8k.wav"
    async with Subscriber(f"ws://127.0.0.1:{daemon.port}/alerts") as sub:
        code, output = await run_reference_client(
            url,
            f"--api-key {SAMPLE_API_KEY}",
            f"--client-secret {SAMPLE_CLIENT_SECRET}",
            f"--wavfile {wav}",
        )
        (ended,) = await sub.wait_call_ended()
    assert code == 0, output[-3000:]
    assert '"channels":["external","internal"]' in output  # opened: stereo PCMU chosen
    assert "Session closed (state: CLOSING)" in output  # our 'closed' answered its 'close'
    assert "Websocket close - Code: 1000" in output
    assert {e["track"] for e in sub.of_type("score")} == {"external", "internal"}
    assert ended["reason"] == "stop" and set(ended["tracks"]) == {"external", "internal"}
    uuid.UUID(ended["call_id"])  # the conversationId

    code, output = await run_reference_client(
        url,
        "--api-key V3JvbmdLZXlXcm9uZ0tleQ==",
        f"--client-secret {SAMPLE_CLIENT_SECRET}",
        f"--wavfile {wav}",
    )
    assert "Unexpected server response: 401" in output, output[-3000:]

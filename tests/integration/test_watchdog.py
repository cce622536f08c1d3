"""The systemd watchdog over a real unix datagram socket: it stops being fed when the engine
stalls, and a normal stop (even a slow one) is never reported as a stall."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
import structlog

from streamguard.audio.file import read_audio
from streamguard.daemon import Daemon
from streamguard.notify import Notifier
from streamguard.sources.senders import native_frames
from tests.conftest import misbehaving_detector

from .conftest import daemon_settings, until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class NotifySocket:
    """What systemd listens on: collects WATCHDOG=1 datagrams with their arrival time."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.pings: list[float] = []

    async def read_forever(self) -> None:
        """Read like systemd does, promptly (its queue holds only ~10 datagrams)."""
        while True:
            self.collect()
            await asyncio.sleep(0.02)

    def collect(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096).decode()
            except BlockingIOError:
                return
            if "WATCHDOG=1" in data.splitlines():
                self.pings.append(time.monotonic())


async def test_watchdog_starves_on_a_stalled_engine_and_a_stop_is_not_a_stall(
    tiny_detector, fixtures_dir, tmp_path
):
    notify = NotifySocket(tmp_path / "notify")
    release = threading.Event()
    wedged = misbehaving_detector(tiny_detector, mode="hang", release=release)
    # WatchdogSec=0.2 s -> a ping every 0.1 s; a heartbeat older than 3 s is a stall.
    # One worker: the heartbeat is the engine's (any worker's), so with two an idle second
    # worker kept it fresh whenever the batching put every loud window on the first one.
    daemon = Daemon(
        daemon_settings(model={"torchscript": False, "workers": 1}),
        detector=wedged,
        notifier=Notifier(notify.path, watchdog_usec=200_000),
    )
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    reader = asyncio.create_task(notify.read_forever())
    with structlog.testing.capture_logs() as logs:
        await daemon.start()
        try:
            await until(lambda: len(notify.pings) >= 3)  # a healthy engine: fed
            base = f"ws://127.0.0.1:{daemon.port}"
            async with asyncio.timeout(30):
                from websockets.asyncio.client import connect

                async with connect(f"{base}/ingest") as feed:
                    for _, frame in list(native_frames(mono, rate, call_id="wedge"))[:-1]:
                        await feed.send(frame)
                    while not any(e["event"] == "engine_stalled" for e in logs):
                        await asyncio.sleep(0.1)
                    notify.collect()
                    stalled_at = time.monotonic()
                    # starved: ten watchdog intervals without a ping (no load can add one)
                    await asyncio.sleep(1.0)
                    notify.collect()
                    assert not [t for t in notify.pings if t > stalled_at]
                    release.set()  # the kernel comes back
                    released_at = time.monotonic()
                    await until(lambda: [t for t in notify.pings if t > released_at])  # fed
            # A slow stop: a subscriber that never reads nor answers the close handshake keeps
            # the server closing for seconds after the engine has stopped. Not a stall.
            _reader, writer = await open_unresponsive_subscriber(daemon.port)
            logs.clear()
            started = time.monotonic()
            await asyncio.wait_for(daemon.stop(), 60)
            writer.close()
        finally:
            release.set()
            await asyncio.wait_for(daemon.stop(), 60)
            reader.cancel()
    assert not [e for e in logs if e["event"] == "engine_stalled"], (
        f"a {time.monotonic() - started:.1f} s stop was reported as a stall"
    )


async def open_unresponsive_subscriber(port: int):
    """A raw-socket WebSocket client: completes the handshake, then reads nothing, ever."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /alerts HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101")
    return reader, writer

"""A real daemon on 127.0.0.1 (ephemeral ports, tiny model) and real clients for it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streamguard.config import load_config
from streamguard.daemon import Daemon


@pytest.fixture(scope="session", autouse=True)
def _daemons_serve_the_production_backend(tiny_onnx_build) -> None:
    """Every daemon here scores through ONNX int8, the CPU default (see tiny_onnx_build)."""


def daemon_settings(**sections):
    """Loopback, ephemeral ports, RTP off unless asked for; other sections as given."""
    overrides = {
        "server": {"host": "127.0.0.1", "port": 0},
        "sources": {"rtp": {"enabled": False, "host": "127.0.0.1", "port": 0}},
        "model": {"max_wait_ms": 5},
        "logging": {"level": "warning"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(overrides.get(key), dict):
            overrides[key] = {**overrides[key], **value}
        else:
            overrides[key] = value
    return load_config(None, overrides)


@pytest.fixture
async def make_daemon(tiny_detector) -> AsyncIterator:
    """Factory: ``await make_daemon(**config_sections)`` -> a started Daemon, stopped after.
    ``detector=`` serves another detector than the tiny one."""
    started: list[Daemon] = []

    async def factory(detector=None, **sections) -> Daemon:
        daemon = Daemon(daemon_settings(**sections), detector=detector or tiny_detector)
        await daemon.start()
        started.append(daemon)
        return daemon

    yield factory
    for daemon in started:
        await asyncio.wait_for(daemon.stop(), 30)


async def until(predicate, timeout: float = 30.0, interval: float = 0.02) -> None:
    """Poll ``predicate()`` until true (readiness, not a fixed sleep): AssertionError after
    ``timeout`` seconds, which only a broken daemon should ever reach."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s"
        await asyncio.sleep(interval)


class Subscriber:
    """A real /alerts WebSocket subscriber collecting events in the background."""

    def __init__(self, url: str, token: str | None = None):
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"} if token else None
        self.events: list[dict] = []
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        async with connect(self.url, additional_headers=self.headers) as ws:
            self._ready.set()
            # the daemon died (kill -9 tests) or drained (1001)
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    self.events.append(json.loads(message))

    def of_type(self, type_: str, call_id: str | None = None) -> list[dict]:
        return [
            e
            for e in self.events
            if e["type"] == type_ and (call_id is None or e["call_id"] == call_id)
        ]

    async def wait_for(self, predicate, timeout: float = 30.0) -> None:
        async def poll() -> None:
            while not predicate(self.events):
                await asyncio.sleep(0.02)

        await asyncio.wait_for(poll(), timeout)

    async def wait_call_ended(self, count: int = 1, timeout: float = 30.0) -> list[dict]:
        await self.wait_for(lambda ev: sum(e["type"] == "call_ended" for e in ev) >= count, timeout)
        return self.of_type("call_ended")


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server on a free loopback port, stopped after the test."""
    from .redis_server import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()

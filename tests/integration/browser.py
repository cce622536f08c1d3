"""Debian's chromium, headless, driven through its chromedriver with selenium.

Selenium's calls block, and the daemon under test runs on the test's own event loop, so every
browser call runs in a worker thread (``await browser.call(...)``): the loop keeps serving the
page while the browser waits for it. The driver and browser binaries are Debian's
(``scripts/system-deps.sh``); selenium is told both paths, so it never looks for or downloads
a driver of its own.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")

needs_chromium = pytest.mark.requires_tool("chromium", "chromedriver")

#: Flags that work in a container without a display, GPU, sandbox or network.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


class Browser:
    """One headless chromium with a fresh profile; screenshots go to ``shots``.

    ``network=True`` records chromium's own network log (DevTools ``Network`` events through
    chromedriver's performance log): :meth:`requested_urls` is every URL the page asked for.
    """

    def __init__(
        self,
        profile: Path,
        shots: Path,
        *,
        width: int = 1400,
        height: int = 1000,
        network: bool = False,
    ):
        self.profile = profile
        self.shots = shots
        self.size = (width, height)
        self.network = network
        self.driver: Any = None
        self._urls: list[str] = []

    async def __aenter__(self) -> Browser:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={self.profile}"):
            options.add_argument(flag)
        options.add_argument(f"--window-size={self.size[0]},{self.size[1]}")
        logs = {"browser": "ALL", **({"performance": "ALL"} if self.network else {})}
        options.set_capability("goog:loggingPrefs", logs)
        service = Service(executable_path=CHROMEDRIVER)
        self.driver = await asyncio.to_thread(webdriver.Chrome, options=options, service=service)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.driver is not None:
            await asyncio.to_thread(self.driver.quit)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def get(self, url: str) -> None:
        await self.call(self.driver.get, url)

    async def js(self, script: str, *args: Any) -> Any:
        return await self.call(self.driver.execute_script, script, *args)

    async def wait_for(self, script: str, *args: Any, timeout: float = 30.0, what: str = "") -> Any:
        """Poll ``script`` (JS returning a value) until it is truthy; return that value."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.js(script, *args)
            if value:
                return value
            if time.monotonic() > deadline:
                shot = await self.screenshot("timeout")
                raise AssertionError(f"timed out waiting for {what or script} (see {shot})")
            await asyncio.sleep(0.1)

    async def screenshot(self, name: str) -> Path:
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{name}.png"
        await self.call(self.driver.save_screenshot, str(path))
        return path

    async def console(self) -> list[str]:
        return [entry["message"] for entry in await self.call(self.driver.get_log, "browser")]

    async def requested_urls(self) -> list[str]:
        """Every URL requested so far (HTTP requests, redirects, WebSocket handshakes), as
        chromium's network log has them (needs ``network=True``)."""
        for entry in await self.call(self.driver.get_log, "performance"):  # read once, then gone
            message = json.loads(entry["message"])["message"]
            params = message.get("params", {})
            if message.get("method") == "Network.requestWillBeSent":
                self._urls.append(params["request"]["url"])
                if "redirectResponse" in params:
                    self._urls.append(params["redirectResponse"]["url"])
            elif message.get("method") == "Network.webSocketCreated":
                self._urls.append(params["url"])
        return list(self._urls)


class TcpForwarder:
    """A plain TCP relay on 127.0.0.1 (a stand-in for a load balancer in front of the daemon):
    the browser keeps one address while the daemon behind it is replaced (``target``)."""

    def __init__(self, target: int):
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> TcpForwarder:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()
                self._writers.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

"""``streamguard serve`` as a real process: sd_notify over a real unix datagram socket, real
signals (SIGHUP reload, SIGTERM drain mid-call), exit status."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest
from websockets.asyncio.client import connect

from streamguard.audio.file import read_audio

from .conftest import Subscriber

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class ServeProcess:
    def __init__(self, tmp_path, model_dir, config):
        self.notify_path = str(tmp_path / "notify.sock")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.notify.settimeout(60)
        env = {
            **os.environ,
            "NOTIFY_SOCKET": self.notify_path,
            "STREAMGUARD_LOGGING__FORMAT": "json",
            "HF_HUB_OFFLINE": "1",
        }
        cmd = [
            sys.executable,
            "-m",
            "streamguard.cli",
            "serve",
            "--config",
            str(config),
            "--model",
            str(model_dir),
            "--port",
            "0",
            "--rtp-port",
            "0",
        ]
        self.proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        self.logs: list[dict] = []
        self.lines: list[str] = []  # stderr as written, JSON or not (tracebacks...)
        self.port: int | None = None
        self._port_known = threading.Event()
        self._reader = threading.Thread(target=self._read_logs, daemon=True)
        self._reader.start()

    def _read_logs(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            try:
                record = json.loads(line)
            except ValueError:
                continue
            self.logs.append(record)
            if record.get("event") == "ready":
                self.port = record["port"]
                self._port_known.set()

    def messages(self, until: str) -> list[str]:
        """Notify datagrams up to and including the one that starts with ``until``."""
        seen = []
        while True:
            data = self.notify.recv(4096).decode()
            seen.append(data)
            if any(line.startswith(until) for line in data.splitlines()):
                return seen

    def wait_port(self) -> int:
        assert self._port_known.wait(60), self.logs
        assert self.port is not None
        return self.port

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.notify.close()


async def test_serve_notifies_reloads_and_drains_on_sigterm(tmp_path, tiny_model_dir, fixtures_dir):
    config = tmp_path / "streamguard.toml"
    config.write_text("[smoothing]\nraise_after = 2\n")
    serve = ServeProcess(tmp_path, tiny_model_dir, config)
    try:
        ready = await asyncio.to_thread(serve.messages, "READY=1")
        assert any("STATUS=" in m for m in ready)
        port = await asyncio.to_thread(serve.wait_port)

        # SIGHUP: RELOADING=1 (with MONOTONIC_USEC) then READY=1 again
        config.write_text("[smoothing]\nraise_after = 1\n")
        serve.proc.send_signal(signal.SIGHUP)
        reload_msgs = await asyncio.to_thread(serve.messages, "READY=1")
        assert any("RELOADING=1" in m and "MONOTONIC_USEC=" in m for m in reload_msgs)

        rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
        pcm = (mono[0, : 6 * rate] * 32767).astype("<i2").tobytes()
        base = f"ws://127.0.0.1:{port}"
        async with Subscriber(f"{base}/alerts") as sub, connect(f"{base}/ingest") as feed:
            await feed.send(
                json.dumps(
                    {"call_id": "live", "sample_rate": rate, "encoding": "pcm_s16le", "channels": 1}
                )
            )
            for i in range(0, len(pcm), 320):
                await feed.send(pcm[i : i + 320])
            await sub.wait_for(lambda ev: any(e["type"] == "score" for e in ev))
            serve.proc.send_signal(signal.SIGTERM)
            (ended,) = await sub.wait_call_ended()
        assert ended["call_id"] == "live" and ended["reason"] == "shutdown"
        assert ended["summary"]["duration"] == pytest.approx(6.0, abs=0.05)
        assert await asyncio.to_thread(serve.proc.wait, 30) == 0
        stopping = await asyncio.to_thread(serve.messages, "STOPPING=1")
        assert stopping
    finally:
        serve.close()


def test_a_native_crash_leaves_every_threads_python_stack_on_stderr(tmp_path, tiny_model_dir):
    """A segfault in torch or ONNX Runtime must say where it happened: without faulthandler a
    crashed unit leaves only "status=11/SEGV" in the journal (as CI once saw of the demo)."""
    config = tmp_path / "streamguard.toml"
    config.write_text("")
    serve = ServeProcess(tmp_path, tiny_model_dir, config)
    try:
        serve.wait_port()
        serve.proc.send_signal(signal.SIGSEGV)
        assert serve.proc.wait(30) == -signal.SIGSEGV
        serve._reader.join(10)
        text = "".join(serve.lines)
        assert "Fatal Python error: Segmentation fault" in text
        assert "most recent call first" in text and "streamguard" in text
    finally:
        serve.close()


def test_serve_with_bad_config_is_one_line_and_exit_2(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[smoothing]\nraise_afer = 3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "streamguard.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "smoothing.raise_afer" in lines[0] and "unknown key" in lines[0]


async def test_sighup_applies_to_running_calls_and_a_bad_file_keeps_the_old_config(
    tmp_path, tiny_model_dir, fixtures_dir
):
    """One call spans two reloads. The tiny model scores this speech ~0.44: under the model's
    threshold (0.5) nothing alerts; after a SIGHUP with on_threshold 0.4 the same running call
    raises at its next window; a file broken on purpose (a wrong type beside an on_threshold
    of 0.9, which would clear the alert) is refused and logged, and the call goes on under
    the last good config (no clear)."""
    from streamguard.sources.senders import native_frames

    config = tmp_path / "streamguard.toml"
    config.write_text("[smoothing]\nclear_after = 2\n")
    serve = ServeProcess(tmp_path, tiny_model_dir, config)
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    frames = list(native_frames(mono, rate, call_id="live"))

    def until_seconds(end: float) -> list:
        return [f for t, f in frames if t < end or (end >= 10 and t >= 10)]

    async def reload(text: str) -> None:
        config.write_text(text)
        serve.proc.send_signal(signal.SIGHUP)
        msgs = await asyncio.to_thread(serve.messages, "READY=1")
        assert any("RELOADING=1" in m for m in msgs)

    try:
        await asyncio.to_thread(serve.messages, "READY=1")
        base = f"ws://127.0.0.1:{await asyncio.to_thread(serve.wait_port)}"
        sent = 0

        async def send_until(ws, end: float) -> None:
            nonlocal sent
            batch = until_seconds(end)
            for frame in batch[sent:]:
                await ws.send(frame)
            sent = len(batch)

        def scored(start: float):
            return lambda ev: any(e["type"] == "score" and e["start"] == start for e in ev)

        async with Subscriber(f"{base}/alerts") as sub, connect(f"{base}/ingest") as ws:
            # half a second past a window's end: the resampler holds a few ms back
            await send_until(ws, 6.5)  # windows 0, 1, 2
            await sub.wait_for(scored(2.0))
            assert not sub.of_type("alert")
            await reload("[smoothing]\non_threshold = 0.4\nraise_after = 1\nclear_after = 2\n")
            await send_until(ws, 8.5)  # windows 3, 4
            await sub.wait_for(scored(4.0))
            (raised,) = sub.of_type("alert")
            assert raised["state"] == "raised" and raised["threshold"] == 0.4
            assert raised["start"] == 3.0  # the first window scored under the new config
            await reload('[smoothing]\non_threshold = 0.9\nraise_after = "one"\n')
            await send_until(ws, 10.0)  # windows 5, 6 and the stop
            (ended,) = await sub.wait_call_ended()
        failed = [r for r in serve.logs if r.get("event") == "reload_failed"]
        assert len(failed) == 1 and "smoothing.raise_after" in failed[0]["error"]
        assert [a["state"] for a in sub.of_type("alert")] == ["raised"]  # 0.9 never applied
        assert ended["reason"] == "stop" and ended["summary"]["verdict"] == "fake"
        serve.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(serve.proc.wait, 30) == 0
    finally:
        serve.close()

"""The bundled models and demo call: what a fresh install runs with no --model."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from streamguard.cli import main
from streamguard.commands.demo import demo_call_path
from streamguard.errors import ModelError
from streamguard.model import load_detector, loading
from streamguard.policy.verdict import format_threshold

pytestmark = pytest.mark.integration

MODELS = Path(__file__).resolve().parents[2] / "streamguard" / "models"


def test_the_accurate_tier_is_the_default_and_the_starter_its_fallback(monkeypatch, caplog):
    detector = load_detector(None, device="cpu")
    assert detector.info.name == "streamguard-accurate"
    assert detector.info.architecture == "whisper-asp"
    assert 0.0 < detector.info.threshold < 1.0
    assert len(detector.module.encoder.blocks) == 2  # the first 2 of Whisper-base's 6 blocks
    card = (MODELS / "accurate" / "MODEL_CARD.md").read_text()
    assert "held out" in card and "EER" in card
    starter = load_detector("starter", device="cpu")
    assert starter.info.name == "streamguard-starter"
    assert "starter" in (MODELS / "starter" / "MODEL_CARD.md").read_text().lower()

    def not_installed(name):
        raise ModelError(f"the {name} encoder weights are not installed")

    monkeypatch.setattr(loading, "_encoder_source", not_installed)
    with caplog.at_level(logging.WARNING, logger="streamguard.model.loading"):
        fallback = load_detector(None, device="cpu")
    assert fallback.info.name == "streamguard-starter"
    assert "the starter tier, the fallback: the whisper-base encoder weights are not installed" in (
        caplog.text
    )


def test_scan_without_model_uses_the_default_tier(fixtures_dir, capsys):
    assert main(["scan", str(fixtures_dir / "speech_10s_8k.wav"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "streamguard-accurate"
    assert [w["start"] for w in report["tracks"][0]["windows"]] == [float(i) for i in range(7)]


async def test_serve_without_model_uses_the_default_tier():
    from streamguard.daemon import Daemon

    from .conftest import daemon_settings

    daemon = Daemon(daemon_settings())
    await daemon.start()
    try:
        assert daemon.detector.info.name == "streamguard-accurate"
    finally:
        await daemon.stop()


@pytest.mark.slow
def test_demo_flags_the_synthetic_caller_and_not_the_agent():
    """`make run` in miniature: the daemon, a subscriber and the demo call at 8x speed."""
    assert demo_call_path().exists()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamguard.cli",
            "demo",
            "--once",
            "--speed",
            "8",
            "--port",
            "0",
            "--rtp-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-4000:], proc.stdout[-2000:])
    lines = proc.stdout.splitlines()
    assert any(line.strip().startswith("dashboard: http://127.0.0.1:") for line in lines)
    # without --config the events are not kept, and the banner says so
    assert any(line.strip().startswith("event log: in memory, not kept") for line in lines)
    threshold = format_threshold(load_detector(None, device="cpu").info.threshold)
    assert any(line.startswith("model: ") and f"threshold {threshold}," in line for line in lines)
    assert any("demo-call/inbound" in line and "ALERT raised" in line for line in lines)
    assert not any("demo-call/outbound" in line and "ALERT raised" in line for line in lines)
    assert any("call ended" in line and "verdict=FAKE" in line for line in lines)


@pytest.mark.slow
def test_demo_keeps_serving_after_the_call_and_stops_cleanly_on_ctrl_c():
    """`make run`: after the demo call the daemon says it keeps running; Ctrl-C drains, exit 0."""
    import queue
    import signal
    import threading

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamguard.cli",
            "demo",
            "--speed",
            "8",
            "--port",
            "0",
            "--rtp-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        seen: list[str] = []
        while not any("Ctrl-C stops it" in line for line in seen):
            # Loading the model and streaming the call can take long on a loaded machine; once
            # the call has ended the hint follows at once (a 30 s wait there meant it hung).
            ended = any("call ended" in line for line in seen)
            seen.append(lines.get(timeout=25 if ended else 180))
        assert any("call ended" in line for line in seen)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

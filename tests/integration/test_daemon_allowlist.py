"""The allow-list on the real daemon, on a two-track call: the leg spoken by an enrolled voice
(the operator's own TTS) is reported ``allowlisted`` and never alerts; the other leg, a voice
that is not enrolled, alerts as before. Enrolment goes through the real CLI and Resemblyzer's
encoder, from clips espeak-ng speaks here (other sentences than the call's)."""

from __future__ import annotations

import subprocess

import pytest

from streamguard.audio.file import read_audio
from streamguard.cli import main
from streamguard.client import send_frames
from streamguard.sources.senders import twilio_frames
from tests.conftest import require_tool

from .conftest import Subscriber

pytestmark = pytest.mark.integration

pytest.importorskip("resemblyzer", reason="pip install --no-deps resemblyzer (make bootstrap)")

#: Every window alerts unless the allow-list takes it (on 0, never cleared).
ALWAYS = {"on_threshold": 0.0, "off_threshold": 0.0, "raise_after": 1}
SENTENCES = (
    "Thank you for calling. Your call is important to us, please stay on the line.",
    "For billing questions press one. For technical support press two.",
    "All of our agents are busy at the moment. The expected waiting time is four minutes.",
)


def enrolment_clips(folder, voice: str) -> list[str]:
    """The IVR's voice (espeak-ng's en-us, the left channel of the stereo fixture) saying other
    things than the call does."""
    require_tool("espeak-ng")
    paths = []
    for i, text in enumerate(SENTENCES):
        path = folder / f"{voice}-{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(path), text], check=True)
        paths.append(str(path))
    return paths


async def test_the_enrolled_leg_is_allowlisted_the_other_alerts(
    make_daemon, fixtures_dir, tmp_path, capsys
):
    config = tmp_path / "c.toml"
    config.write_text(f'[allowlist]\npath = "{tmp_path / "allow"}"\nthreshold = 0.8\n')
    assert main(["allowlist", "add", "ivr", *enrolment_clips(tmp_path, "en-us"),
                 "--config", str(config)]) == 0  # fmt: skip
    assert "enrolled ivr: 3 clips" in capsys.readouterr().out
    daemon = await make_daemon(
        smoothing=ALWAYS, allowlist={"path": str(tmp_path / "allow"), "min_p_fake": 0.0}
    )
    assert daemon.engine.allowlist is not None
    rate, stereo = read_audio(fixtures_dir / "speech_stereo_16k.wav")
    base = f"ws://127.0.0.1:{daemon.port}"
    async with Subscriber(f"{base}/alerts") as sub:
        await send_frames(f"{base}/twilio", twilio_frames(stereo, rate, call_sid="CAivr"))
        (ended,) = await sub.wait_call_ended()
    scores = sub.of_type("score")
    inbound = [e for e in scores if e["track"] == "inbound"]  # left: the enrolled voice
    outbound = [e for e in scores if e["track"] == "outbound"]  # right: another voice
    assert inbound and all(e["allowlisted"] == "ivr" for e in inbound)
    assert outbound and not any(e["allowlisted"] for e in outbound)
    assert {e["track"] for e in sub.of_type("alert")} == {"outbound"}
    tracks = ended["tracks"]
    assert tracks["inbound"]["windows_allowlisted"] == len(inbound)
    assert tracks["inbound"]["verdict"] != "fake" and tracks["outbound"]["verdict"] == "fake"

    # check: the call's own legs against the enrolled voice
    left, right = tmp_path / "left.wav", tmp_path / "right.wav"
    require_tool("sox")
    subprocess.run(["sox", str(fixtures_dir / "speech_stereo_16k.wav"), str(left),
                    "remix", "1"], check=True)  # fmt: skip
    subprocess.run(["sox", str(fixtures_dir / "speech_stereo_16k.wav"), str(right),
                    "remix", "2"], check=True)  # fmt: skip
    assert main(["allowlist", "check", str(left), str(right), "--config", str(config)]) == 0
    out = [line for line in capsys.readouterr().out.splitlines() if ".wav: " in line]
    assert "ALLOWLISTED as ivr" in out[0] and "not allowlisted" in out[1], out
    assert main(["allowlist", "remove", "ivr", "--config", str(config)]) == 0
    assert main(["allowlist", "list", "--config", str(config)]) == 0
    assert "no enrolled voices" in capsys.readouterr().out
    assert main(["allowlist", "add", "../x", str(left), "--config", str(config)]) == 2
    assert "voice name" in capsys.readouterr().err

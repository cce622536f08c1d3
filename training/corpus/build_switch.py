"""Voice-switch calls: a real voice opens the call, a synthetic one takes over (issue #17).

The attack: a caller talks in their own voice (or hands the line to a real person) and switches
to a cloned voice mid-call. A detector that decides once, early, or averages the whole call
misses it. Each call here is the clean clips of one **real** speaker of the split (8-16 s),
then the clean clips of one **synthetic** voice of a fake family of the split (10-20 s), joined
with 0.3-1.5 s pauses over one noise floor, then one channel for the whole call (half of them
through corpus v2's telephone channel, ``build_v2.phone_channel``), so nothing but the voice
changes at the switch. The real speaker is drawn among those of the fake voice's language
when the split has one.

``switch_at`` (call seconds) is where the first synthetic clip starts; ``streamguard evaluate``
reports the delay from there to the first alert, and counts an alert raised before it as a
false alarm (``streamguard.training.switch``). Every choice is seeded from the call's key.

    python training/corpus/build_switch.py            # v3's test and val splits -> v3/*.csv

Writes ``<out>/switch/<split>/<family>/callNN.wav`` (``--out`` default ``.corpus-v3``) and
``v3/switch-calls.csv`` (test) + ``v3/val-switch-calls.csv`` (val): v3's columns +
``switch_at``; label ``fake``, family/attack/speaker of the synthetic voice, ``derived_from``
``switch:<real speaker>``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
import build as v1  # noqa: E402  (write_wav, rng_for, shuffled)
import build_v2 as v2  # noqa: E402  (phone_channel, write_manifest)
from build import SR, rng_for, shuffled  # noqa: E402

COLUMNS = [*v2.COLUMNS, "processing", "switch_at"]  # corpus v3's + the switch time
REAL_SECONDS = (8.0, 16.0)
FAKE_SECONDS = (10.0, 20.0)


def read_rows(manifest: Path) -> list[dict]:
    """Manifest rows with ``path`` resolved to an absolute file."""
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["abs"] = str((manifest.parent / r["path"]).resolve())
    return rows


def _take(group: list[dict], seconds: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Clips of ``group`` (in order) until ``seconds`` of audio, each followed by a pause."""
    import soundfile as sf

    parts: list[np.ndarray] = []
    total = 0.0
    for r in group:
        if total >= seconds:
            break
        y, rate = sf.read(r["abs"], dtype="float32")
        if rate != SR:
            raise ValueError(f"{r['abs']}: {rate} Hz, expected {SR}")
        parts += [y.reshape(-1), np.zeros(int(rng.uniform(0.3, 1.5) * SR), np.float32)]
        total += len(y) / SR
    return parts


def build_switch_calls(
    rows: list[dict], out: Path, split: str, seed: int, per_family: int, tmp: Path
) -> list[dict]:
    """Switch calls of ``split``: ``per_family`` per fake family (one synthetic voice each,
    round-robin over the family's voices), the real part drawn from the split's real voices."""
    clean = [r for r in rows if r["subset"] == split and r["condition"] == "clean"
             and r.get("processing", "none") in ("", "none")]  # fmt: skip
    real: dict[str, list[dict]] = defaultdict(list)
    fake: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in clean:
        if r["label"] == "real":
            real[r["speaker"]].append(r)
        else:
            fake[r["family"]][r["speaker"]].append(r)
    by_lang: dict[str, list[str]] = defaultdict(list)
    for speaker, group in sorted(real.items()):
        if sum(float(r["duration"]) for r in group) >= REAL_SECONDS[1]:
            by_lang[group[0].get("lang", "")].append(speaker)
    everyone = sorted(s for speakers in by_lang.values() for s in speakers)
    if not everyone:
        return []
    calls: list[dict] = []
    for family, voices in sorted(fake.items()):
        names = shuffled(sorted(voices), seed, f"switch:{split}:{family}")
        made = 0
        for attempt in range(3 * per_family):  # voices with too little speech are passed over
            if made == per_family:
                break
            voice = names[attempt % len(names)]
            key = f"switch:{split}:{family}:{attempt}"
            rng = rng_for(seed, key)
            group = shuffled(sorted(voices[voice], key=lambda r: r["path"]), seed, key)
            if sum(float(r["duration"]) for r in group) < 8.0:
                continue  # too little synthetic speech for a 6 s target to mean much
            lang = group[0].get("lang", "")
            pool = by_lang.get(lang) or everyone
            speaker = pool[int(rng.integers(len(pool)))]
            opening = shuffled(sorted(real[speaker], key=lambda r: r["path"]), seed, key + ":r")
            head = _take(opening, rng.uniform(*REAL_SECONDS), rng)
            tail = _take(group, rng.uniform(*FAKE_SECONDS), rng)
            switch_at = sum(len(p) for p in head) / SR
            x = np.concatenate(head + tail)
            floor = 10 ** (rng.uniform(-60, -48) / 20)
            x = x + floor * rng.standard_normal(len(x)).astype(np.float32)
            phone = made % 2 == 1
            channel = "clean"
            if phone:
                x, channel = v2.phone_channel(x, rng, tmp)
            rel = f"switch/{split}/{family}/call{made:02d}.wav"
            v1.write_wav(out / rel, np.clip(x, -1, 1))
            first = group[0]
            calls.append({**first, "path": rel, "subset": split, "label": "fake",
                          "condition": "phone" if phone else "clean", "channel": channel,
                          "duration": f"{len(x) / SR:.2f}", "text_key": f"switch/{voice}/{made}",
                          "derived_from": f"switch:{speaker}", "processing": "none",
                          "switch_at": f"{switch_at:.2f}"})  # fmt: skip
            made += 1
    return calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=str(HERE / "v3" / "manifest.csv"))
    parser.add_argument("--out", default=str(REPO / ".corpus-v3"), help="audio folder")
    parser.add_argument("--manifests", default=str(HERE / "v3"), help="manifest folder")
    parser.add_argument("--per-family", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = read_rows(Path(args.manifest))
    out, manifests = Path(args.out).absolute(), Path(args.manifests).absolute()
    prefix = os.path.relpath(out, manifests) + "/"  # relative, through the link, like v3's
    with tempfile.TemporaryDirectory() as tmp:
        for split, name in (("test", "switch-calls.csv"), ("val", "val-switch-calls.csv")):
            calls = build_switch_calls(rows, out, split, args.seed, args.per_family, Path(tmp))
            target = manifests / name
            v2.write_manifest(target, calls, prefix, COLUMNS)
            fams = sorted({c["family"] for c in calls})
            print(f"{target}: {len(calls)} switch calls ({', '.join(fams)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

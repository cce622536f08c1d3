"""Allow-list accept and false-accept rates on the corpus's real and synthetic voices.

Enrols a few synthetic voices (what an operator's IVR or voicemail TTS is), ``--enrol`` clips
each (clean clips), then embeds held-out clips of the enrolled voices (clean and telephone:
should be accepted) and clips of voices that are NOT enrolled, real people and other
synthetic voices (must not be accepted), with the same encoder the daemon uses, and prints the
rates per cosine threshold. Run from the repository root:

    .venv/bin/python benchmarks/allowlist.py --corpus-root /path/with/.corpus-v2-and-v3 \
        [--manifest training/corpus/v3/manifest.csv] [--per-voice 30] [--json]

Paths in the manifest are relative to the manifest's folder (``../../../.corpus-v2/...``);
``--corpus-root`` replaces the ``../../../`` prefix.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ENROLLED = (
    "piper-joe",
    "flite-slt",
    "festival-kal_diphone",
    "festival-cmu_us_slt_arctic_hts",
    "espeak-en+f2",
)
#: Not enrolled. Single-speaker sources only (``fotaq-others``, ``bass-cast`` are casts).
OTHERS_FAKE = (
    "flite-awb",
    "flite-rms",
    "festival-pc_diphone",
    "festival-ked_diphone",
    "festival-msu_ru_nsh_clunits",
    "espeak-en-us+m3",
    "espeak-en-gb-x-rp+m4",
    "espeak-es+m1",
)
#: The same speaker as an enrolled voice through another engine (Kal: diphone vs flite):
#: reported apart, a match there is the encoder doing its job.
SAME_SPEAKER_OTHER_ENGINE = ("flite-kal",)
OTHERS_REAL = (
    "asterisk-allison",
    "asterisk-june",
    "asterisk-carlo",
    "asterisk-ivrvoice-ru",
    "fotaq-joe",
    "fillets-nl-big",
    "fillets-cs-small",
    "gcin-liu",
)
THRESHOLDS = (0.65, 0.70, 0.75, 0.80, 0.85, 0.90)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default="training/corpus/v3/manifest.csv")
    parser.add_argument("--corpus-root", required=True, type=Path)
    parser.add_argument("--enrol", type=int, default=5, help="clips enrolled per voice")
    parser.add_argument("--per-voice", type=int, default=30, help="test clips per voice")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from streamguard.allowlist.encoder import load_encoder
    from streamguard.allowlist.store import _unit
    from streamguard.audio.file import decode_mono

    with open(args.manifest, encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["processing"] == "none"]
    by_speaker: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["family"] in ("griffin-lim", "world", "hifigan-tiny", "vocos-tiny"):
            # vocoder copies keep their source's (real) speaker label: count them as their
            # own synthetic "voices" below, never as the real speaker
            by_speaker[f"{r['family']}:{r['speaker']}"].append(r)
        else:
            by_speaker[r["speaker"]].append(r)
    rng = random.Random(0)
    encoder = load_encoder()

    def path_of(r: dict) -> Path:
        return args.corpus_root / r["path"].removeprefix("../../../")

    def embed(rs: list[dict]) -> np.ndarray:
        return np.stack([encoder.embed(decode_mono(path_of(r), 16_000)) for r in rs])

    started = time.perf_counter()
    centroids = {}
    tests: dict[str, np.ndarray] = {}
    for name in ENROLLED:
        clips = by_speaker[name][:]
        rng.shuffle(clips)
        clean = [r for r in clips if r["condition"] == "clean"]
        enrol = clean[: args.enrol]
        rest = [r for r in clips if r not in enrol][: args.per_voice]
        centroids[name] = _unit(embed(enrol).mean(axis=0))
        tests[name] = embed(rest)
    groups = {
        "enrolled voice (held-out clips)": list(ENROLLED),
        "not enrolled, synthetic": [
            *OTHERS_FAKE,
            "griffin-lim:fotaq-joe",
            "hifigan-tiny:bass-cast",
            "vocos-tiny:fotaq-joe",
        ],
        "not enrolled, real": list(OTHERS_REAL),
        "same speaker, other engine (flite-kal vs festival-kal)": list(SAME_SPEAKER_OTHER_ENGINE),
    }
    for name in [n for g in list(groups.values())[1:] for n in g]:
        clips = by_speaker[name][:]
        rng.shuffle(clips)
        tests[name] = embed(clips[: args.per_voice])
    seconds = time.perf_counter() - started
    names = list(centroids)
    matrix = np.stack([centroids[n] for n in names])
    report: dict = {"thresholds": list(THRESHOLDS), "groups": {}, "embed_seconds": seconds}
    for group, members in groups.items():
        sims = []  # best similarity of each clip, and whether the best is its own voice
        for name in members:
            for e in tests[name]:
                s = matrix @ _unit(e)
                best = int(np.argmax(s))
                sims.append((float(s[best]), names[best] == name))
        n = len(sims)
        if group.startswith("enrolled"):
            rates = [sum(1 for s, own in sims if s >= t and own) / n for t in THRESHOLDS]
        else:
            rates = [sum(1 for s, _ in sims if s >= t) / n for t in THRESHOLDS]
        report["groups"][group] = {"clips": n, "voices": len(members), "rates": rates}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"encoder resemblyzer-ge2e; {sum(len(v) for v in tests.values())} clips embedded "
        f"in {seconds:.0f} s; enrolled {len(ENROLLED)} voices x {args.enrol} clean clips"
    )
    print("| clips | " + " | ".join(f">= {t:.2f}" for t in THRESHOLDS) + " |")
    for group, g in report["groups"].items():
        what = "accepted" if group.startswith("enrolled") else "false accepts"
        cells = " | ".join(f"{r:.1%}" for r in g["rates"])
        print(f"| {group}: {what} ({g['clips']} clips, {g['voices']} voices) | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

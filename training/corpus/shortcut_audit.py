"""Shortcut audit: can a trivial classifier tell real from fake by bandwidth, energy, duration or
language alone? If it can, a detector may be learning that instead of synthesis artefacts.

Features per clip (computed on the 16 kHz wav as stored in the corpus):

* ``duration`` (s);
* ``energy``: RMS of the whole clip, RMS of the active frames, peak, noise floor (5th
  percentile of 20 ms frame levels), share of active frames;
* ``bandwidth``: frequency below which 95% / 99% of the energy lies, share of energy above 3.4,
  4, 5 and 6 kHz;
* ``silence``: leading and trailing pause, longest pause inside (s; frames 40 dB under the
  loudest are silent);
* ``language``: one-hot of the manifest's ``lang`` column.

With a ``family`` column (v2, v3), the all-cues boosting model's AUC is also given per fake
family of the test split against all real test clips (``by_family``).

Each group (and all of them together) trains a logistic regression and a gradient-boosting
classifier on the train split and reports ROC-AUC on the test split (by condition too). A model
AUC from ``streamguard evaluate`` (``--model-auc``, the clip-level pooled AUC) is printed beside it
for comparison. Run::

    python training/corpus/shortcut_audit.py training/corpus/v2/manifest.csv --out runs/audit
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

GROUPS = {
    "duration": ["duration"],
    "energy": ["rms", "active_rms", "peak", "floor", "active_share"],
    "bandwidth": ["roll95", "roll99", "above3k4", "above4k", "above5k", "above6k"],
    "silence": ["lead", "trail", "longest_pause"],
}


def clip_features(path: Path) -> dict[str, float]:
    import soundfile as sf

    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    frame = sr // 50
    n = max(1, len(x) // frame)
    e = np.mean(x[: n * frame].reshape(n, -1).astype(np.float64) ** 2, axis=1) + 1e-12
    db = 10 * np.log10(e)
    active = db > db.max() - 40
    spec = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    cum = np.cumsum(spec) / (spec.sum() + 1e-12)
    total = spec.sum() + 1e-12
    return {
        "duration": len(x) / sr,
        "rms": float(10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-12)),
        "active_rms": float(10 * np.log10(np.mean(e[active]))),
        "peak": float(20 * np.log10(np.abs(x).max() + 1e-9)),
        "floor": float(np.percentile(db, 5)),
        "active_share": float(active.mean()),
        "roll95": float(freqs[np.searchsorted(cum, 0.95)]),
        "roll99": float(freqs[min(len(freqs) - 1, np.searchsorted(cum, 0.99))]),
        "above3k4": float(spec[freqs > 3400].sum() / total),
        "above4k": float(spec[freqs > 4000].sum() / total),
        "above5k": float(spec[freqs > 5000].sum() / total),
        "above6k": float(spec[freqs > 6000].sum() / total),
        **pauses(active, frame / sr),
    }


def pauses(active: np.ndarray, frame_s: float) -> dict[str, float]:
    """Leading / trailing silence and the longest pause inside (s), from the active frames."""
    idx = np.flatnonzero(active)
    if len(idx) == 0:
        return {"lead": 0.0, "trail": 0.0, "longest_pause": 0.0}
    gaps = np.diff(idx) - 1
    return {
        "lead": float(idx[0] * frame_s),
        "trail": float((len(active) - 1 - idx[-1]) * frame_s),
        "longest_pause": float(gaps.max() * frame_s) if len(gaps) else 0.0,
    }


def read_rows(manifest: Path) -> list[dict]:
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["_path"] = (manifest.parent / r["path"]).resolve()
        r["_y"] = 1 if r["label"] in ("fake", "1", "spoof") else 0
    return rows


def audit(rows: list[dict], progress: bool = True) -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from tqdm import tqdm

    feats = [clip_features(r["_path"]) for r in tqdm(rows, disable=not progress, unit="clip")]
    langs = sorted({r.get("lang", "") for r in rows})
    for f, r in zip(feats, rows, strict=True):
        for lang in langs:
            f[f"lang={lang}"] = float(r.get("lang", "") == lang)
    groups = dict(GROUPS, language=[f"lang={lang}" for lang in langs])
    groups["all"] = [k for g in groups.values() for k in g]
    train = [i for i, r in enumerate(rows) if r["subset"] == "train"]
    test = [i for i, r in enumerate(rows) if r["subset"] == "test"]
    y = np.array([r["_y"] for r in rows])
    conditions = sorted({rows[i]["condition"] for i in test})
    out: dict = {}
    for name, keys in groups.items():
        X = np.array([[f[k] for k in keys] for f in feats])
        out[name] = {}
        for model_name, model in (
            ("logistic", make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))),
            ("boosting", HistGradientBoostingClassifier(max_iter=200, random_state=0)),
        ):
            model.fit(X[train], y[train])
            p = model.predict_proba(X[test])[:, 1]
            res = {"test": float(roc_auc_score(y[test], p))}
            for cond in conditions:
                sel = np.array([rows[i]["condition"] == cond for i in test])
                if len(set(y[test][sel])) == 2:
                    res[cond] = float(roc_auc_score(y[test][sel], p[sel]))
            out[name][model_name] = res
            if name == "all" and model_name == "boosting" and "family" in rows[0]:
                out["by_family"] = by_family(rows, test, y, p)
    return out


def by_family(rows: list[dict], test: list[int], y: np.ndarray, p: np.ndarray) -> dict:
    """AUC of the all-cues model for each fake family of the test split against every real
    test clip: which generator the non-speech cues give away."""
    from sklearn.metrics import roc_auc_score

    fam = np.array([rows[i]["family"] for i in test])
    real = y[test] == 0
    out = {}
    for family in sorted(set(fam[~real])):
        sel = real | (fam == family)
        out[family] = {"auc": float(roc_auc_score(y[test][sel], p[sel])),
                       "clips": int((fam == family).sum())}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path, help="corpus manifest with subset/lang columns")
    parser.add_argument("--out", type=Path, help="write audit.json here")
    parser.add_argument("--model-auc", type=float, help="the detector's clip-level test AUC")
    args = parser.parse_args(argv)
    result = audit(read_rows(args.manifest))
    print(f"{'features':12} {'logistic AUC':>13} {'boosting AUC':>13}   (test split; 0.5 = chance)")
    for name, res in result.items():
        if name != "by_family":
            print(f"{name:12} {res['logistic']['test']:13.3f} {res['boosting']['test']:13.3f}")
    for family, res in result.get("by_family", {}).items():
        print(f"  all cues, boosting, {family:18} {res['auc']:.3f} ({res['clips']} test clips)")
    if args.model_auc is not None:
        print(f"{'detector':12} {args.model_auc:13.3f}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "audit.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``streamguard train --from-labels``: fine-tune the serving model on the operator's labelled
evidence, with a replay of its base corpus, and show what it did to the base figures.

1. **Labelled evidence** (:func:`labelled_evidence`): every complete evidence clip of a
   labelled call (``[evidence] path`` of the daemon's config), labelled by its track's label,
   else the call's (``unsure`` and unlabelled clips are left out), written as a manifest CSV
   into the run folder (``labelled-evidence.csv``; one speaker id per call, so a call never
   spans training and validation).
2. **Replay**: the recipe's own sources stay in the run beside it (``--labels-weight`` is the
   evidence's share of training draws against the base's), so the model keeps what it knew;
   the run starts from the serving model's weights (``model.init_from``: the daemon's
   ``[model] spec`` unless the recipe names one).
3. **No forgetting, measured** (:func:`base_heldout`, :func:`score_report`): the base corpus's
   held-out rows (its ``test`` rows, else ``val``) are scored by the serving model before and
   by the new model after; both figures go to ``from-labels.json`` and the console.
4. **Calibration**: the labelled evidence is scored by the new model through the daemon's
   chain and :func:`streamguard.calibration.calibrate` chooses the policy
   (``--max-false-alarms``); the snippet is written as ``calibration.toml`` in the new model
   directory beside its card, with the base figures.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from streamguard.errors import ConfigError

__all__ = ["base_heldout", "labelled_evidence", "score_report", "write_manifest"]


def labelled_evidence(settings: Any) -> list[dict[str, str]]:
    """Rows ``{path, label, speaker, call_id, track}`` of the labelled evidence clips."""
    from streamguard.alerts.bus import SubscriptionFilter
    from streamguard.alerts.store import EventLogError, EventStore
    from streamguard.evidence import EvidenceStore, call_key
    from streamguard.labels import iter_log, latest_labels

    root = settings.evidence.resolved_path(settings.events)
    if not root.is_dir():
        raise ConfigError(f"no evidence audio at {root}: set [evidence] keep and label calls")
    try:
        log = EventStore(settings.events.resolved_path(), readonly=True)
    except EventLogError as exc:
        raise ConfigError(str(exc)) from None
    try:
        labels = latest_labels(iter_log(log.read, SubscriptionFilter(types=frozenset({"label"}))))
    finally:
        log.close()
    store = EvidenceStore(root)
    rows = []
    for call_id in dict.fromkeys(c for c, _ in labels):
        for clip in store.clips(call_id):
            own = labels.get((call_id, clip.track)) or labels.get((call_id, None))
            path = store.wav_path(call_id, clip.clip)
            if own is None or own.label == "unsure" or path is None:
                continue
            rows.append(
                {
                    "path": str(path),
                    "label": own.label,
                    "speaker": f"call-{call_key(call_id)[:12]}",
                    "call_id": call_id,
                    "track": clip.track,
                }
            )
    return rows


def write_manifest(rows: list[dict[str, str]], path: Path) -> None:
    """The evidence as a training manifest (absolute paths; no subset: the run splits)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "speaker", "source"])
        for r in rows:
            writer.writerow([r["path"], r["label"], r["speaker"], "evidence"])


def base_heldout(config: Any) -> list[Any]:
    """The base corpus's held-out examples: its ``test`` rows, else its ``val`` rows."""
    from streamguard.training.data import read_data

    examples = []
    for source in config.data.sources:
        got = read_data(
            source.path,
            source.type,
            audio_root=source.audio_root,
            default_subset=source.subset,
        )
        examples += got.examples
    test = [e for e in examples if e.subset == "test"]
    return test or [e for e in examples if e.subset == "val"]


def score_report(detector: Any, examples: list[Any]) -> dict[str, Any]:
    """Pooled figures of ``detector`` on ``examples`` at its own threshold."""
    from streamguard.training.evaluate import evaluate_scores, score_examples

    scores, kept, _ = score_examples(detector, examples)
    pooled = evaluate_scores(kept, scores, detector.info.threshold)["pooled"]
    keys = ("n", "n_real", "n_fake", "eer", "auc", "far", "frr", "accuracy")
    return {k: pooled.get(k) for k in keys if k in pooled} | {"threshold": detector.info.threshold}


def format_figures(name: str, figures: dict[str, Any]) -> str:
    def pct(v: Any) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    return (
        f"{name}: {figures.get('n')} clips, EER {pct(figures.get('eer'))}, "
        f"AUC {figures.get('auc') if figures.get('auc') is None else round(figures['auc'], 3)}, "
        f"at its threshold {figures.get('threshold')}: FAR {pct(figures.get('far'))}, "
        f"FRR {pct(figures.get('frr'))}"
    )


def write_outcome(out_dir: Path, export_dir: Path | None, outcome: dict[str, Any]) -> None:
    (out_dir / "from-labels.json").write_text(json.dumps(outcome, indent=2))
    if export_dir is not None:
        (export_dir / "from-labels.json").write_text(json.dumps(outcome, indent=2))

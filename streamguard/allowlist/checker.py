"""The engine's allow-list step: scored windows whose speaker is an enrolled voice.

Runs on the scoring worker thread after each batch (``ScoringEngine.allowlist``): every window
scored at or above ``min_p_fake`` (only those could push a track towards an alert) is embedded
with the speaker encoder and matched against the enrolled voices; a match turns its score into
:class:`~streamguard.scoring.outcome.Allowlisted`, which the call session reports as a
``score`` with ``allowlisted`` set and keeps out of the alert policy.
"""

from __future__ import annotations

from typing import Any

from streamguard.allowlist.store import AllowList
from streamguard.scoring.outcome import Allowlisted, ScoreOutcome

__all__ = ["AllowlistChecker"]


class AllowlistChecker:
    """``checker(windows, outcomes) -> outcomes`` (see the module docstring)."""

    def __init__(self, allowlist: AllowList, encoder: Any, *, min_p_fake: float = 0.0) -> None:
        self.allowlist = allowlist
        self.encoder = encoder
        self.min_p_fake = min_p_fake
        self.checked = 0
        self.matched = 0

    def __call__(self, windows: list[Any], outcomes: list[ScoreOutcome]) -> list[ScoreOutcome]:
        out: list[ScoreOutcome] = []
        for window, outcome in zip(windows, outcomes, strict=True):
            if isinstance(outcome, float) and outcome >= self.min_p_fake:
                self.checked += 1
                match = self.allowlist.match(self.encoder.embed(window.samples))
                if match is not None:
                    self.matched += 1
                    outcome = Allowlisted(outcome, match.name, match.similarity)
            out.append(outcome)
        return out


async def load_checker(settings: Any, events: Any) -> AllowlistChecker | None:
    """The engine's allow-list step for ``[allowlist]`` (``settings``; ``events``: where its
    folder defaults to), or None when no voice is enrolled (nothing to check)."""
    import asyncio

    import structlog

    from streamguard.allowlist.encoder import ENCODER_NAME, load_encoder

    root = settings.resolved_path(events)
    if not any(root.glob("*.json")):
        return None
    allowlist = await asyncio.to_thread(
        AllowList, root, threshold=settings.threshold, encoder=ENCODER_NAME
    )
    encoder = await asyncio.to_thread(load_encoder)
    structlog.get_logger("streamguard.daemon").info(
        "allowlist_loaded", voices=sorted(allowlist.voices), threshold=settings.threshold
    )
    return AllowlistChecker(allowlist, encoder, min_p_fake=settings.min_p_fake)

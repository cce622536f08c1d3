"""Hot model swap: load and check a new model beside the serving one, then switch.

``POST /api/model`` (:func:`handle_post_model`) and SIGHUP (``[model] spec`` changed in the
config file) both end in :meth:`streamguard.daemon.Daemon.swap_model`, which runs
:func:`prepare` off the loop: the model is loaded, must keep the serving model's sample rate
and window (the windows already cut and waiting are cut for it; another window length needs a
restart), its serving runners are built the way start-up builds them and each is probed
(finite P(fake) on a silent and a noisy window, the start-up check). Only then does the
engine switch, between batches (:meth:`streamguard.scoring.engine.ScoringEngine.swap`): no
call is dropped, no window is lost or scored twice, and one ``model_changed`` event names the
old and the new model. A model that fails any step is refused (4xx from the API, an error
line in the log on SIGHUP) and the old one keeps serving.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamguard.alerts.events import ModelChanged, ModelIdentity
from streamguard.errors import StreamguardError

__all__ = [
    "Candidate",
    "SwapRefused",
    "handle_post_model",
    "identity_of",
    "model_changed",
    "prepare",
]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: Largest ``POST /api/model`` body read.
MAX_MODEL_REQUEST_BYTES = 4096


class SwapRefused(StreamguardError):
    """The new model cannot serve: one line saying why (the old model keeps serving)."""


@dataclass
class Candidate:
    """A loaded, checked model with its runners, ready for the engine."""

    detector: Any
    runners: list[Any]
    identity: ModelIdentity


def identity_of(detector: Any, weights_path: Path | None = None) -> ModelIdentity:
    """What ``model_changed`` says about a model: name, architecture, sha256 of its weights
    file (or the sha256 its provenance records; null when neither is known)."""
    sha = None
    if weights_path is not None and Path(weights_path).is_file():
        from streamguard.model.weights import sha256_file

        sha = sha256_file(weights_path)
    else:
        recorded = str(detector.info.provenance.get("sha256") or "")
        sha = recorded if _SHA256.match(recorded) else None
    return ModelIdentity(
        name=detector.info.name, architecture=detector.info.architecture, sha256=sha
    )


def model_changed(old: ModelIdentity, new: ModelIdentity) -> ModelChanged:
    """The ``model_changed`` draft (a daemon-level event: no call, track or source)."""
    return ModelChanged(call_id=None, track=None, source=None, old=old, new=new)


def prepare(
    spec: str | None,
    *,
    current: Any,
    device: str,
    build_runners: Callable[[Any], list[Any]],
    close_runners: Callable[[list[Any]], None],
) -> Candidate:
    """Load ``spec`` (None: the bundled model), check it fits beside ``current`` (the serving
    detector), build and probe its runners. Blocking (seconds): run it off the loop. Raises
    :class:`SwapRefused`."""
    from streamguard.model.loading import load_model
    from streamguard.scoring.engine import probe_detector

    try:
        loaded = load_model(spec, device=device)
    except StreamguardError as exc:
        raise SwapRefused(f"cannot load model {spec or 'bundled'!r}: {exc}") from None
    except Exception as exc:  # a corrupt file the loaders did not foresee
        what = f"{type(exc).__name__}: {str(exc)[:200]}"
        raise SwapRefused(f"cannot load model {spec or 'bundled'!r}: {what}") from None
    new, old = loaded.detector.info, current.info
    if (new.sample_rate, new.window_samples) != (old.sample_rate, old.window_samples):
        raise SwapRefused(
            f"model {new.name} takes {new.window_seconds:g} s windows at {new.sample_rate} Hz, "
            f"the serving model {old.window_seconds:g} s at {old.sample_rate} Hz: windows "
            "already cut would not fit; restart the daemon to change the window"
        )
    runners = build_runners(loaded.detector)
    try:
        for runner in runners:
            probe_detector(runner)
    except StreamguardError as exc:
        close_runners(runners)
        raise SwapRefused(str(exc)) from None
    return Candidate(loaded.detector, runners, identity_of(loaded.detector, loaded.weights_path))


Response = tuple[int, dict[str, str], bytes]


def _json(status: int, data: Any) -> Response:
    body = json.dumps(data, separators=(",", ":")).encode()
    return status, {"Content-Type": "application/json", "Cache-Control": "no-store"}, body


async def handle_post_model(
    body: bytes, *, swap: Callable[[str], Awaitable[ModelChanged]]
) -> Response:
    """``POST /api/model`` with ``{"model": SPEC}``: 200 with ``{"old", "new"}`` once the
    daemon serves the new model; 400/413/422 for a bad body or a model that fails to load or
    check (the old one keeps serving); 409 while another swap is under way. ``swap`` is
    :meth:`streamguard.daemon.Daemon.swap_model`."""
    if len(body) > MAX_MODEL_REQUEST_BYTES:
        return _json(413, {"error": f"request body larger than {MAX_MODEL_REQUEST_BYTES} bytes"})
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return _json(400, {"error": "request body is not JSON"})
    if not isinstance(data, dict) or set(data) != {"model"}:
        return _json(400, {"error": 'request body must be {"model": SPEC}'})
    spec = data["model"]
    if not isinstance(spec, str) or not spec.strip() or len(spec) > 1024:
        return _json(422, {"error": "model: a model spec (a path, a bundled name or a hub id)"})
    try:
        event = await swap(spec.strip())
    except SwapBusy as exc:
        return _json(409, {"error": str(exc)})
    except SwapRefused as exc:
        return _json(422, {"error": str(exc)})
    return _json(200, {"old": event.old.model_dump(), "new": event.new.model_dump()})


class SwapBusy(StreamguardError):
    """Another swap is under way."""

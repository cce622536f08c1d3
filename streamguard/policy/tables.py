"""The alert policy's tables of a daemon config file, read without the daemon's config module.

Owns how the trainer and its tools (``training/policy.py --check``, ``training/lofo.py
--daemon-config``) read ``[track]``, ``[smoothing]`` and ``[verdict]`` from a daemon TOML file:
validated by the very models the daemon uses (:class:`~streamguard.audio.track.TrackSettings`,
:class:`~streamguard.policy.smoothing.SmoothingSettings`,
:class:`~streamguard.policy.verdict.VerdictSettings`), so a value the daemon refuses is refused
here too, but without :mod:`streamguard.config`: the trainer knows nothing of sources, ports or
the event log, and the daemon's ``STREAMGUARD_*`` environment does not reach it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from streamguard.audio.track import TrackSettings
from streamguard.errors import ConfigError
from streamguard.policy.smoothing import SmoothingSettings
from streamguard.policy.verdict import VerdictSettings
from streamguard.tomlfile import read_toml

__all__ = ["PolicyTables", "read_policy_tables"]

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class PolicyTables:
    track: TrackSettings
    smoothing: SmoothingSettings
    verdict: VerdictSettings


def read_policy_tables(path: Path | str) -> PolicyTables:
    """``[track]``, ``[smoothing]`` and ``[verdict]`` of the daemon config ``path`` (missing
    tables: the daemon's defaults); any other table is left alone. One :class:`ConfigError`
    line for a missing or malformed file or a bad value."""
    path = Path(path)
    data = read_toml(path)
    return PolicyTables(
        track=_table(data, "track", TrackSettings, path),
        smoothing=_table(data, "smoothing", SmoothingSettings, path),
        verdict=_table(data, "verdict", VerdictSettings, path),
    )


def _table(data: dict[str, Any], name: str, model: type[T], path: Path) -> T:
    raw = data.get(name, {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        raise ConfigError(f"{path}: {name}.{where}: {err['msg']}") from None

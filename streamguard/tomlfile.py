"""Reading a TOML file with one clear error: shared by the daemon's config and the trainer's.

A module of its own so that the trainer reads its files the same way without importing the
daemon's config (``streamguard.config``) and its settings.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from streamguard.errors import ConfigError

__all__ = ["read_toml"]


def read_toml(path: Path, what: str = "config file") -> dict[str, Any]:
    """Parse a TOML file; a missing, unreadable or malformed one is one :class:`ConfigError`."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text") from None

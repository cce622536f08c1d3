"""Hugging Face hub access that honours the environment at call time.

huggingface_hub reads ``HF_HOME``/``HF_HUB_OFFLINE`` once, when it is imported; streamguard reads
them whenever it resolves something, so a test (or a long-lived process) that changes them gets
what it asked for. Nothing here downloads unless the hub is allowed and reachable.
"""

from __future__ import annotations

import os
from pathlib import Path


def hub_cache_dir() -> Path:
    """The hub cache directory as the environment says now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` asks for cache-only access."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def fetch_hint(repo_id: str, revision: str | None = None) -> str:
    """The command that fills the cache on a connected machine."""
    return f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")

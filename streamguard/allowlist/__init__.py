"""The allow-list: the operator's own synthetic voices (IVR prompts, voicemail greetings).

A window whose speaker matches an enrolled voice is reported as ``allowlisted`` and never
alerts. :mod:`~streamguard.allowlist.store` keeps the enrolled voices (speaker embeddings as
JSON, no pickle) and matches an embedding against them (pure); :mod:`~streamguard.allowlist.
encoder` turns audio into a speaker embedding (Resemblyzer's GE2E encoder).
docs/operations.md, "Allow-list".
"""

from streamguard.allowlist.store import AllowList, AllowListError, Match, Voice, cosine

__all__ = ["AllowList", "AllowListError", "Match", "Voice", "cosine"]

"""Evidence audio (``[evidence]``): which of a track's audio to keep, and the clips on disk.

:class:`~streamguard.evidence.recorder.TrackRecorder` (pure: audio and alert transitions in,
clip operations out) and :class:`~streamguard.evidence.store.EvidenceStore` (the files, their
sidecars, retention and deletion). docs/operations.md, "Evidence audio".
"""

from streamguard.evidence.recorder import (
    CONTEXT_SECONDS,
    ClipOp,
    CloseClip,
    OpenClip,
    TrackRecorder,
    WriteClip,
    lookback_seconds,
    new_clip_id,
)
from streamguard.evidence.store import (
    ClipInfo,
    EvidenceError,
    EvidenceStore,
    call_key,
    valid_clip_id,
)

__all__ = [
    "CONTEXT_SECONDS",
    "ClipInfo",
    "ClipOp",
    "CloseClip",
    "EvidenceError",
    "EvidenceStore",
    "OpenClip",
    "TrackRecorder",
    "WriteClip",
    "call_key",
    "lookback_seconds",
    "new_clip_id",
    "valid_clip_id",
]

"""Logging setup: structlog, one line per event on stderr (journald adds time and unit).

* ``format="json"`` (production): one JSON object per line; ``format="console"`` for humans.
* ``merge_contextvars`` runs first, so ``structlog.contextvars.bind_contextvars(call_id=...)``
  in a call's task tags every line that call's code logs.
* Timestamps are ISO 8601 UTC.
* Exceptions are rendered WITHOUT frame locals: structlog's default dict tracebacks include
  them, and a frame's locals can hold tokens or whole audio buffers.
* Keys that look secret (token, authorization, password, secret, api_key, cookie) are replaced
  by ``"[redacted]"`` at any depth, and ``token=...`` inside string values is masked, so an
  ``/alerts?token=...`` request path never reaches the journal.
* Standard-library loggers (websockets, asyncio) go through the same renderer.

``configure_logging`` is process-wide by nature (logging is); call it once at start and again
from the SIGHUP handler with the new level.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(r"token|authorization|password|passwd|secret|api[_-]?key|cookie", re.I)
_SECRET_IN_TEXT = re.compile(
    r"((?:token|access_token|api_key|password)=)[^&\s\"']+|(Bearer\s+)[^\s\"']+", re.I
)
_HANDLER_NAME = "streamguard"


def redact(value: Any, depth: int = 0) -> Any:
    """``value`` with secret-looking keys masked at any depth (also used on event metadata)."""
    if depth > 6:
        return value
    if isinstance(value, str):
        return _SECRET_IN_TEXT.sub(lambda m: (m.group(1) or m.group(2)) + REDACTED, value)
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) else redact(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact(v, depth + 1) for v in value)
    return value


def redact_secrets(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-looking keys (any depth) and ``token=`` in strings."""
    for key in list(event_dict):
        if _SECRET_KEY.search(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = redact(event_dict[key])
    return event_dict


def _renderer(fmt: str) -> Any:
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    return structlog.processors.JSONRenderer()


def configure_logging(
    level: str = "info", fmt: str = "json", *, stream: TextIO | None = None
) -> None:
    """Route structlog and stdlib logging to ``stream`` (default stderr) at ``level``."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    exc_processors: list[Any] = []
    if fmt == "json":
        exc_processors = [
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
        ]
    structlog.configure(
        processors=[
            # first, so a line below the level is dropped before any processor or renderer
            # runs; its arguments are still built by the caller (the bus serialises each
            # score event for its debug line whatever the level: ~10 us, one per hop per track)
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *exc_processors,
            _renderer(fmt),
        ],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)


def set_level(level: str) -> None:
    """Change the level in place (SIGHUP reload)."""
    logging.getLogger().setLevel(level.upper())

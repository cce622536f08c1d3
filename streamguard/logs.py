"""Logging setup: structlog, one line per event on stderr (journald adds time and unit).

* ``format="json"`` (production): one JSON object per line; ``format="console"`` for humans.
* ``merge_contextvars`` runs first, so ``structlog.contextvars.bind_contextvars(call_id=...)``
  in a call's task tags every line that call's code logs.
* Timestamps are ISO 8601 UTC.
* Exceptions are rendered WITHOUT frame locals: structlog's default dict tracebacks include
  them, and a frame's locals can hold tokens or whole audio buffers.
* Secrets never reach a line (:func:`redact`, then once more on the rendered line, so text
  inside exception messages is covered too): keys that look secret (token, authorization,
  password, secret, api_key, cookie, signature, credential) are replaced by ``"[redacted]"`` at
  any depth (no depth limit; cycles guarded), and inside text: header values of
  ``Authorization``, ``X-API-KEY``, ``Cookie``, ``X-Twilio-Signature``, ``Signature``; bearer,
  basic and digest credentials; the ``streamguard.bearer.<token>`` subprotocol; query
  parameters whose percent-decoded name looks secret (``?token=``, ``?%74oken=``); the userinfo
  of a URL (``https://user:pass@host``). websockets' own debug lines (every request header) go
  through the same masks, and its dumps of data frames keep only the frame's kind and size
  (a feed's payload is a stranger's data, elided where no mask can follow it).
* Standard-library loggers (websockets, asyncio, httpx) go through the same renderer.

``configure_logging`` is process-wide by nature (logging is); call it once at start and again
from the SIGHUP handler with the new level.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO
from urllib.parse import unquote_plus

import structlog
from structlog.tracebacks import ExceptionDictTransformer

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(
    r"token|authorization|password|passwd|secret|api[_-]?key|cookie|signature|credential", re.I
)
_SECRET_IN_TEXT = re.compile(
    # a header line (websockets' debug dumps: "< Authorization: Basic ...") or "name: value"
    r"(?P<header>\b(?:proxy-authorization|authorization|x-api-key|api-key|set-cookie|cookie"
    r"|x-twilio-signature|signature)\s*[:=]\s*)[^\r\n\"\\]+"
    # the daemon's browser subprotocol
    r"|(?P<subprotocol>streamguard\.bearer\.)[A-Za-z0-9_=-]+"
    # an HTTP credential anywhere else
    r"|(?P<scheme>\b(?:bearer|basic|digest)\s+)[A-Za-z0-9._~+/=-]+"
    # a URL's userinfo: scheme://user:password@host
    r"|(?P<url>\b[a-z][a-z0-9+.-]*://)[^/\s@\"'\\]+@",
    re.I,
)
#: A query parameter (or key=value) whose percent-decoded name looks secret; the value stops
#: at the next "?" too, so "url=https://x/cb?token=..." still reaches the token.
_PARAMETER = re.compile(r"(?:(?<=[?&;\s\"'(,])|^)([A-Za-z0-9_.%+-]+)=([^&?\s\"'#\\]+)")
#: What any secret above contains: text without it is returned as it is, at the cost of one
#: search (most log fields: ids, times, numbers).
_TRIGGER = re.compile(r"[=@]|authori|api-key|cookie|signature|bearer|basic|digest", re.I)
#: websockets' debug line for a data frame: "< TEXT '{...}' [235 bytes]". Its payload is a
#: feed's (a first frame's metadata, tokens in customParameters) and is elided in the middle,
#: which can cut a key from its value, so no mask could be trusted on it: only the frame's
#: kind and size are kept.
_FRAME_DUMP = re.compile(r"^([<>] (?:TEXT|BINARY|CONT)) .*(\[[^\]]*\])$", re.S)
_CONTAINERS = (dict, list, tuple)
_HANDLER_NAME = "streamguard"


def _mask(match: re.Match[str]) -> str:
    prefix = match.group("header") or match.group("subprotocol") or match.group("scheme")
    if prefix is not None:
        return prefix + REDACTED
    return match.group("url") + REDACTED + "@"


def _mask_parameter(match: re.Match[str]) -> str:
    name = match.group(1)
    return f"{name}={REDACTED}" if _SECRET_KEY.search(unquote_plus(name)) else match.group(0)


def redact_text(text: str) -> str:
    """``text`` with the secrets it may carry masked (see the module docstring)."""
    if not _TRIGGER.search(text):
        return text
    text = _SECRET_IN_TEXT.sub(_mask, text)
    return _PARAMETER.sub(_mask_parameter, text) if "=" in text else text


def redact(value: Any) -> Any:
    """``value`` with secret-looking keys masked at any depth and the secrets in its text
    masked (:func:`redact_text`); also used on call metadata before it is published.

    Walks without recursion (a structure nested thousands deep is no problem) and guards
    cycles (a container inside itself becomes ``"[cycle]"``); shared containers are copied
    once. Containers are copied, never changed in place.
    """
    if isinstance(value, str):
        return redact_text(value)
    if not isinstance(value, _CONTAINERS):
        return value
    done: dict[int, Any] = {}  # id(container) -> its redacted copy
    open_: set[int] = set()  # containers being copied (their ancestors' ids)
    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in done:
            continue
        if not children_done:
            open_.add(key)
            stack.append((node, True))
            items = node.values() if isinstance(node, dict) else node
            for child in items:
                # a child already open is an ancestor (a cycle): _copied says so
                if (
                    isinstance(child, _CONTAINERS)
                    and id(child) not in done
                    and id(child) not in open_
                ):
                    stack.append((child, False))
            continue
        if isinstance(node, dict):
            copy: Any = {
                k: REDACTED
                if isinstance(k, str) and _SECRET_KEY.search(k)
                else _copied(v, done, open_)
                for k, v in node.items()
            }
        else:
            copy = type(node)(_copied(v, done, open_) for v in node)
        open_.discard(key)
        done[key] = copy
    return done[id(value)]


def _copied(value: Any, done: dict[int, Any], open_: set[int]) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, _CONTAINERS):
        return done.get(id(value), "[cycle]")
    return value


def redact_secrets(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: :func:`redact` every field (secret-looking keys, any depth), and
    websockets' data frame dumps shortened to their kind and size (:data:`_FRAME_DUMP`)."""
    if str(event_dict.get("logger", "")).startswith("websockets"):
        event = event_dict.get("event")
        if isinstance(event, str):
            event_dict["event"] = _FRAME_DUMP.sub(r"\1 \2", event)
    for key in list(event_dict):
        if _SECRET_KEY.search(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = redact(event_dict[key])
    return event_dict


def redact_exception(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """After the exception is rendered into ``exception`` (it is rendered after the fields
    were redacted): mask what its messages carry, e.g. a header value a parser quotes."""
    if "exception" in event_dict:
        event_dict["exception"] = redact(event_dict["exception"])
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
    # Exceptions become the "exception" field (without frame locals) before the renderer,
    # so redact_exception sees their text in both formats.
    exc_processors: list[Any] = [structlog.processors.format_exc_info]
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
            redact_exception,
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

"""Sans-I/O core for Genesys Cloud AudioHook Monitor (protocol version 2), server side.

One ``AudioHookProtocol`` per WebSocket connection (= one AudioHook session = one call). Input:
:meth:`receive_text` (JSON messages), :meth:`receive_bytes` (audio), :meth:`close` (connection
gone); output: source events (returned) and the server's JSON messages (:meth:`data_to_send`),
which the edge writes to the socket in order. The handshake (API key, HTTP message signature) is
checked before the connection reaches this core (:mod:`~streamguard.server.audiohook_auth`); its
``Audiohook-Session-Id`` and ``Audiohook-Organization-Id`` are passed in and checked against
every message.

Session, as the client (Genesys Cloud) drives it::

    client: open ──────> server: opened (media chosen from the offer)  -> CallStart, TrackStart
    client: binary audio ...                                           -> Audio
    client: ping ──────> server: pong
    client: paused / resumed (client pause; server pause()/resume() ask for one)
    client: discarded (audio the client dropped)                       -> Gap
    client: update ────> server: updated
    client: error (code 400/405/408/409/413/415/429/500/503: informational, counted)
    client: close ─────> server: closed                                -> TrackEnd.., CallEnd

Every client message carries ``version`` "2", ``id`` (the session id), ``type``, ``seq``
(1, 2, 3... with no gaps), ``serverseq`` (the last server ``seq`` it saw: never above ours),
``position`` (``PT<seconds>S``: audio sent plus audio discarded so far) and ``parameters``; server
messages carry ``clientseq`` (the last client ``seq`` received) instead. All of it is checked:
a violation makes the server send ``disconnect`` (reason ``error``, or ``unauthorized`` when the
``open`` names another organisation than the handshake) and emit ``Reject`` (kind
``protocol``; ``unsupported`` for unsupported media), after ending the call if it had started.

Media: the ``open`` offers formats; the server picks, in order of preference, PCMU 8 kHz stereo
(``external`` + ``internal``), L16 stereo, then PCMU mono, L16 mono (any rate 8-64 kHz). Stereo
frames are interleaved in the offered channel order; L16 is 16-bit little-endian. Tracks are
named ``external`` (the customer) and ``internal`` (the agent).

Mapping: ``call_id`` = ``conversationId``; ``source`` = ``audiohook``; the metadata holds
``organizationId``, ``conversationId``, ``sessionId``, ``correlationId``, ``participant`` (``id``,
``dnis``; ``ani`` and ``aniName`` are the caller's number and name, personal data, replaced by
``"[redacted]"`` unless ``include_ani``), ``language``, ``customConfig`` and the media. A
``conversationId`` of all zeros is Genesys' connection probe: answered like any session, but no
call is started.

Time: a ``position`` ahead of the audio received (beyond :data:`POSITION_TOLERANCE_SECONDS`),
``discarded`` and the ``discarded`` of ``resumed`` become :class:`Gap` silence (at most
``max_gap_seconds`` each) so track time stays conversation time; a ``position`` behind the audio
received is a protocol violation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from streamguard.audio.codecs import CodecError, decode
from streamguard.sources.base import (
    Audio,
    CallLifecycle,
    Gap,
    OneCallCore,
    ProtocolViolation,
    RefusalKind,
    Reject,
    SourceEvent,
    call_start_problem,
    rate_problem,
)

log = structlog.get_logger(__name__)

__all__ = [
    "CLIENT_ERROR_CODES",
    "NULL_UUID",
    "POSITION_TOLERANCE_SECONDS",
    "AudioHookProtocol",
    "AudioHookStats",
    "parse_duration",
    "select_media",
]

PROTOCOL_VERSION: Final = "2"
NULL_UUID: Final = "00000000-0000-0000-0000-000000000000"
#: Error codes a client ``error`` message may carry (the protocol's list; others up to 9999 are
#: accepted as the specification allows).
CLIENT_ERROR_CODES: Final = {
    400: "bad request",
    405: "method not allowed",
    408: "request timeout",
    409: "conflict",
    413: "payload too large",
    415: "unsupported media type",
    429: "too many requests",
    500: "internal server error",
    503: "service unavailable",
}
#: How far a message's ``position`` may differ from the audio received (durations are decimals).
POSITION_TOLERANCE_SECONDS: Final = 0.02
MAX_TEXT_CHARS: Final = 65535
REDACTED: Final = "[redacted]"
_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_DURATION: Final = re.compile(r"PT([0-9]{1,12}(?:\.[0-9]{0,9})?|\.[0-9]{1,9})S")
_LANGUAGE: Final = re.compile(r"[a-z]{2,3}-[A-Za-z]{2,3}")
_CHANNELS: Final = ("external", "internal")
_FORMATS: Final = {"PCMU": "mulaw", "L16": "pcm_s16le"}
_CLOSE_REASONS: Final = {"end": "stop", "disconnect": "stop", "reconnect": "stop", "error": "error"}
_CLIENT_TYPES: Final = frozenset(
    {"open", "close", "discarded", "error", "paused", "ping", "resumed", "update"}
)


@dataclass(slots=True)
class AudioHookStats:
    messages: int = 0  # text messages received
    audio_frames: int = 0
    audio_bytes: int = 0
    pings: int = 0
    pauses: int = 0  # client 'paused' messages
    discarded_seconds: float = 0.0  # told by discarded/resumed
    position_gaps: int = 0  # positions ahead of the audio received (silence inserted)
    ignored_after_end: int = 0
    probe_audio_frames: int = 0
    client_errors: list[tuple[int, str]] = field(default_factory=list)  # the last few


def parse_duration(value: object) -> float:
    """``PT<seconds>S`` (the protocol's ISO 8601 subset) as seconds; ProtocolViolation if not."""
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ProtocolViolation("protocol", f"not a PT<seconds>S duration: {str(value)[:24]!r}")
    return float(match.group(1))


def _valid_media(entry: object) -> tuple[str, int, tuple[str, ...]] | None:
    """(format, rate, channels) of one offered media entry, or None if we cannot take it."""
    if not isinstance(entry, dict) or entry.get("type") != "audio":
        return None
    fmt, rate, channels = entry.get("format"), entry.get("rate"), entry.get("channels")
    if fmt not in _FORMATS or rate_problem(rate) is not None:
        return None
    if not isinstance(channels, list) or not 1 <= len(channels) <= 2:
        return None
    if len(set(channels)) != len(channels) or not all(c in _CHANNELS for c in channels):
        return None
    return fmt, rate, tuple(channels)


def select_media(offered: object) -> dict[str, Any] | None:
    """The offer entry to accept: stereo over mono, then PCMU over L16, then the offer's order."""
    if not isinstance(offered, list):
        return None
    best: tuple[tuple[int, int, int], dict[str, Any]] | None = None
    for index, entry in enumerate(offered[:16]):
        parsed = _valid_media(entry)
        if parsed is None:
            continue
        fmt, _, channels = parsed
        rank = (-len(channels), 0 if fmt == "PCMU" else 1, index)
        if best is None or rank < best[0]:
            best = (rank, entry)
    return None if best is None else best[1]


class _Disconnect(Exception):
    """A violation that ends the session with a server ``disconnect``."""

    def __init__(self, reason: str, info: str, kind: RefusalKind = "protocol") -> None:
        super().__init__(info)
        self.reason, self.info, self.kind = reason, info, kind


class AudioHookProtocol(OneCallCore):
    """Server side of one AudioHook session.

    ``session_id`` / ``organization_id`` come from the handshake headers (None in unit tests
    that skip the handshake: then the first message's ``id`` becomes the session id and any
    organisation is accepted). ``include_ani`` keeps the caller's number and name in the call's
    metadata; ``max_gap_seconds`` bounds one inserted silence.
    """

    def __init__(
        self,
        *,
        session_id: str | None = None,
        organization_id: str | None = None,
        correlation_id: str | None = None,
        include_ani: bool = False,
        max_gap_seconds: float = 10.0,
    ) -> None:
        self._call = CallLifecycle()
        self.stats = AudioHookStats()
        self.session_id = session_id.lower() if session_id else None
        self.organization_id = organization_id.lower() if organization_id else None
        self.correlation_id = correlation_id
        self.include_ani = include_ani
        self.max_gap_seconds = max_gap_seconds
        self.state = "connected"  # connected | active | paused | closed | failed
        self.probe = False
        self.media: dict[str, Any] | None = None
        self.language: str | None = None
        self._outbox: list[str] = []
        self._seq = 0  # last server seq sent
        self._clientseq = 0  # last client seq received
        self._encoding = "mulaw"
        self._channels: tuple[str, ...] = ()
        self._rate = 8000
        self._frame_bytes = 1
        self._origin = 0.0  # position of the open message
        self._timeline = 0.0  # seconds of audio received + discarded, since the open

    # ------------------------------------------------------------------ public API
    @property
    def finished(self) -> bool:
        """True once ``closed`` (or a ``disconnect`` after a violation) is queued: flush
        :meth:`data_to_send`, then close the connection."""
        return self.state in ("closed", "failed")

    def data_to_send(self) -> list[str]:
        """Server messages queued since the last call, oldest first."""
        out, self._outbox = self._outbox, []
        return out

    def receive_text(self, text: str) -> list[SourceEvent]:
        if self.finished:
            self.stats.ignored_after_end += 1
            return []
        self.stats.messages += 1
        try:
            return self._message(text)
        except _Disconnect as exc:
            return self._fail(exc)
        except ProtocolViolation as exc:
            return self._fail(_Disconnect("error", exc.reason, exc.kind))

    def receive_bytes(self, data: bytes | bytearray | memoryview) -> list[SourceEvent]:
        if self.finished or self._call.finished:
            self.stats.ignored_after_end += 1
            return []
        try:
            return self._audio(bytes(data))
        except _Disconnect as exc:
            return self._fail(exc)

    def close(self) -> list[SourceEvent]:
        """The connection went away: end the call (``closed``) if it is still open."""
        if self.state not in ("closed", "failed"):
            self.state = "closed"
        return self._call.end("closed")

    def pause(self) -> None:
        """Ask the client to pause the audio (it answers ``paused``)."""
        if self.state in ("active", "paused"):
            self._send("pause", {})

    def resume(self) -> None:
        """Ask the client to resume a pause this server asked for (it answers ``resumed``)."""
        if self.state in ("active", "paused"):
            self._send("resume", {})

    def disconnect(self, info: str = "") -> list[SourceEvent]:
        """End the session from the server side (reason ``completed``): the client answers with
        a close transaction. Returns the events that end the call (reason ``stop``)."""
        if self.state not in ("active", "paused"):
            return []
        self._send(
            "disconnect", {"reason": "completed", "info": info} if info else {"reason": "completed"}
        )
        return self._call.end("stop")

    # ------------------------------------------------------------------ messages
    def _message(self, text: str) -> list[SourceEvent]:
        if len(text) > MAX_TEXT_CHARS:
            raise _Disconnect("error", f"text message too large ({len(text)} > 65535 characters)")
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            raise _Disconnect("error", "text message is not valid JSON") from None
        if not isinstance(msg, dict):
            raise _Disconnect("error", "message is not a JSON object")
        if msg.get("version") != PROTOCOL_VERSION:
            raise _Disconnect(
                "error", f"unsupported protocol version {str(msg.get('version'))[:8]!r}"
            )
        kind, seq, serverseq = msg.get("type"), msg.get("seq"), msg.get("serverseq")
        if not isinstance(kind, str):
            raise _Disconnect("error", "message without a type")
        if not _is_seq(seq) or not _is_seq(serverseq):
            raise _Disconnect("error", "seq and serverseq must be non-negative integers")
        if not isinstance(msg.get("parameters"), dict):
            raise _Disconnect("error", "message without a parameters object")
        if seq != self._clientseq + 1:
            raise _Disconnect("error", f"seq {seq} out of order (expected {self._clientseq + 1})")
        self._clientseq = seq
        if serverseq > self._seq:
            raise _Disconnect(
                "error", f"serverseq {serverseq} is ahead of the server ({self._seq})"
            )
        self._check_id(msg.get("id"))
        position = parse_duration(msg.get("position"))
        if kind not in _CLIENT_TYPES:
            raise _Disconnect("error", f"{kind[:24]!r} is not a client message type")
        params = msg["parameters"]
        if kind == "open":
            return self._open(params, position)
        if kind == "close":  # allowed in any state, like the reference server
            return self._close(params, position)
        if self.state == "connected":
            raise _Disconnect("error", f"{kind!r} before open")
        if self._call.finished and kind != "ping":
            self.stats.ignored_after_end += 1
            return []
        if kind == "ping":
            self.stats.pings += 1
            self._send("pong", {})
            return self._check_position(position)
        if kind == "discarded":
            return self._discarded(params, position)
        if kind == "paused":
            events = self._check_position(position)
            self.stats.pauses += 1
            if self.state == "active":
                self.state = "paused"
            return events
        if kind == "resumed":
            events = self._discarded(params, position)
            if self.state == "paused":
                self.state = "active"
            return events
        if kind == "update":
            language = params.get("language")
            if not isinstance(language, str) or not _LANGUAGE.fullmatch(language):
                raise _Disconnect("error", "update without a valid language code")
            self.language = language
            self._send("updated", {})
            return []
        return self._client_error(params)  # kind == "error"

    def _check_id(self, value: object) -> None:
        if not isinstance(value, str) or not _UUID.fullmatch(value):
            raise _Disconnect("error", "message id must be the session's UUID")
        if self.session_id is None:
            self.session_id = value.lower()
        elif value.lower() != self.session_id:
            raise _Disconnect("error", "message id is not this session's id")

    def _open(self, params: dict[str, Any], position: float) -> list[SourceEvent]:
        if self.state != "connected":
            raise _Disconnect("error", "second open message")
        org = params.get("organizationId")
        conversation = params.get("conversationId")
        participant = params.get("participant")
        if not (isinstance(org, str) and _UUID.fullmatch(org)):
            raise _Disconnect("error", "open: organizationId must be a UUID")
        if not (isinstance(conversation, str) and _UUID.fullmatch(conversation)):
            raise _Disconnect("error", "open: conversationId must be a UUID")
        if not isinstance(participant, dict) or not all(
            isinstance(participant.get(k), str) for k in ("id", "ani", "aniName", "dnis")
        ):
            raise _Disconnect("error", "open: participant needs id, ani, aniName and dnis")
        if self.organization_id is not None and org.lower() != self.organization_id:
            raise _Disconnect(
                "unauthorized", "organizationId does not match the Audiohook-Organization-Id header"
            )
        language = params.get("language")
        if language is not None and not (
            isinstance(language, str) and _LANGUAGE.fullmatch(language)
        ):
            raise _Disconnect("error", "open: language is not a language code")
        custom = params.get("customConfig")
        if custom is not None and not isinstance(custom, dict):
            raise _Disconnect("error", "open: customConfig must be an object")
        self.probe = conversation == NULL_UUID
        media = select_media(params.get("media"))
        if media is None and not self.probe:
            raise _Disconnect(
                "error",
                "no supported media offered (accepted: PCMU or L16, external/internal, 8-64 kHz)",
                "unsupported",
            )
        metadata: dict[str, Any] | None = None
        if not self.probe:
            fmt, rate, _ = _valid_media(media)  # type: ignore[misc]
            metadata = {
                "organizationId": org,
                "conversationId": conversation,
                "sessionId": self.session_id,
                "participant": self._participant(participant),
                "media": media,
                "encoding": _FORMATS[fmt],
                "sample_rate": rate,
            }
            if self.correlation_id:
                metadata["correlationId"] = self.correlation_id
            if language:
                metadata["language"] = language
            if custom:
                metadata["customConfig"] = custom
            # customConfig is the integration's own data: bound it before answering "opened".
            if problem := call_start_problem(conversation, metadata):
                raise _Disconnect("error", f"open: {problem}", "metadata")
        self.language = language
        self._origin = position
        opened: dict[str, Any] = {"startPaused": False, "media": [media] if media else []}
        if params.get("supportedLanguages") is True:
            opened["supportedLanguages"] = []
        self.state = "active"
        if media is not None:
            fmt, rate, channels = _valid_media(media)  # type: ignore[misc]
            self.media = media
            self._encoding, self._rate, self._channels = _FORMATS[fmt], rate, channels
            self._frame_bytes = (1 if fmt == "PCMU" else 2) * len(channels)
        self._send("opened", opened)
        if metadata is None:  # Genesys' connection probe: answered, no call
            return []
        events = self._call.start_call(conversation, "audiohook", metadata)
        for name in self._channels:
            events += self._call.start_track(name, self._rate)
        return events

    def _participant(self, participant: dict[str, Any]) -> dict[str, str]:
        out = {k: str(participant[k])[:128] for k in ("id", "ani", "aniName", "dnis")}
        if not self.include_ani:
            out["ani"] = REDACTED if out["ani"] else ""
            out["aniName"] = REDACTED if out["aniName"] else ""
        return out

    def _close(self, params: dict[str, Any], position: float) -> list[SourceEvent]:
        reason = params.get("reason")
        if reason not in _CLOSE_REASONS:
            raise _Disconnect("error", "close: reason must be end, error, disconnect or reconnect")
        events: list[SourceEvent] = []
        if not self._call.finished and self._behind(position) is None:
            events += self._catch_up(position)
        self._send("closed", {})
        self.state = "closed"
        return events + self._call.end(_CLOSE_REASONS[reason])

    def _discarded(self, params: dict[str, Any], position: float) -> list[SourceEvent]:
        start = parse_duration(params.get("start"))
        discarded = parse_duration(params.get("discarded"))
        if self._behind(start) is not None:
            raise _Disconnect("error", "discarded/resumed start is behind the audio received")
        events = self._catch_up(start)  # audio missing before the discarded range, if any
        events += self._silence(discarded)
        self.stats.discarded_seconds += discarded
        return events + self._check_position(position)

    def _client_error(self, params: dict[str, Any]) -> list[SourceEvent]:
        code, message = params.get("code"), params.get("message")
        if not _is_seq(code) or not 400 <= code <= 9999 or not isinstance(message, str):
            raise _Disconnect(
                "error", "error message needs an integer code 400..9999 and a message"
            )
        self.stats.client_errors = [*self.stats.client_errors[-9:], (code, message[:200])]
        # The one thing an operator must see that no event carries: Genesys telling us why it
        # is unhappy (rate limits, timeouts). Logging needs no socket or clock.
        log.warning(
            "audiohook_client_error",
            code=code,
            meaning=CLIENT_ERROR_CODES.get(code, "other"),
            message=message[:200],
        )
        return []

    # ------------------------------------------------------------------ audio and time
    def _audio(self, data: bytes) -> list[SourceEvent]:
        if self.state == "connected":
            raise _Disconnect("error", "audio before the session was opened")
        if self.state == "paused":
            raise _Disconnect("error", "audio while the stream is paused")
        if self.probe or not self._channels:
            self.stats.probe_audio_frames += 1
            return []
        if len(data) % self._frame_bytes:
            raise _Disconnect(
                "error",
                f"audio frame of {len(data)} bytes is not whole {self.media['format']} "
                f"frames of {len(self._channels)} channel(s)",  # type: ignore[index]
            )
        try:
            samples = decode(self._encoding, data).reshape(-1, len(self._channels))
        except CodecError as exc:  # pragma: no cover - sizes are checked above
            raise _Disconnect("error", str(exc)) from None
        self.stats.audio_frames += 1
        self.stats.audio_bytes += len(data)
        if not len(samples):
            return []
        self._timeline += len(samples) / self._rate
        if len(self._channels) == 1:
            return [Audio(self._channels[0], samples[:, 0])]
        return [Audio(name, samples[:, i].copy()) for i, name in enumerate(self._channels)]

    def _behind(self, position: float) -> float | None:
        """How far ``position`` is behind the audio received (None if it is not)."""
        lag = self._timeline - (position - self._origin)
        return lag if lag > POSITION_TOLERANCE_SECONDS else None

    def _check_position(self, position: float) -> list[SourceEvent]:
        lag = self._behind(position)
        if lag is not None:
            raise _Disconnect(
                "error", f"position {position:g}s is {lag:.3f}s behind the audio received"
            )
        return self._catch_up(position)

    def _catch_up(self, position: float) -> list[SourceEvent]:
        """Silence for audio the client counted in ``position`` but never sent."""
        ahead = (position - self._origin) - self._timeline
        if ahead <= POSITION_TOLERANCE_SECONDS:
            return []
        self.stats.position_gaps += 1
        return self._silence(ahead)

    def _silence(self, seconds: float) -> list[SourceEvent]:
        self._timeline += seconds
        n = round(min(seconds, self.max_gap_seconds) * self._rate)
        if n <= 0 or self.probe or self._call.finished or not self._call.started:
            return []
        return [Gap(name, n) for name in self._channels]

    # ------------------------------------------------------------------ output
    def _send(self, kind: str, parameters: dict[str, Any]) -> None:
        self._seq += 1
        message = {
            "version": PROTOCOL_VERSION,
            "type": kind,
            "seq": self._seq,
            "clientseq": self._clientseq,
            "id": self.session_id or NULL_UUID,
            "parameters": parameters,
        }
        self._outbox.append(json.dumps(message, separators=(",", ":")))

    def _fail(self, exc: _Disconnect) -> list[SourceEvent]:
        """A violation: tell the client why (``disconnect``), end the call, reject."""
        self._send("disconnect", {"reason": exc.reason, "info": exc.info[:200]})
        self.state = "failed"
        # After disconnect() the call is already over and the lifecycle has no Reject to give.
        return self._call.reject(exc.kind, exc.info) or [Reject(exc.kind, exc.info)]


def _is_seq(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0

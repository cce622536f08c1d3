"""The one configuration schema of the daemon: a TOML file plus ``STREAMGUARD_*`` overrides.

``load_config(path)`` reads ``configs/streamguard.toml``-shaped files (every key is commented in
that file). Precedence, highest first: ``overrides`` (CLI flags) > environment > TOML > defaults.
Environment names are ``STREAMGUARD_<SECTION>__<KEY>``, e.g. ``STREAMGUARD_SERVER__PORT=9000``,
``STREAMGUARD_SOURCES__RTP__ENABLED=false``, ``STREAMGUARD_AUTH__TOKEN=...``.

Why so strict: pydantic-settings silently ignores a missing TOML file and unknown nested keys
unless told otherwise, and a daemon that starts with a typo'd ``[smoothing] raise_afer = 5``
runs with the default the operator meant to change. So every model forbids unknown keys, an
explicit config path must exist, and every problem becomes one :class:`ConfigError` line
naming the key path.

Reload: only :data:`RELOADABLE_SECTIONS` change on SIGHUP (see :func:`apply_reload`); the rest
(ports, model, sources) needs a restart.
"""

from __future__ import annotations

import contextvars
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streamguard.audio.track import TrackSettings
from streamguard.backends import BACKENDS
from streamguard.errors import ConfigError
from streamguard.policy.smoothing import SmoothingSettings
from streamguard.policy.verdict import VerdictSettings
from streamguard.sources.base import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from streamguard.tomlfile import read_toml

RELOADABLE_SECTIONS = ("smoothing", "verdict", "logging")
"""Sections a SIGHUP re-reads and applies to running and new tracks; all else needs a restart."""


#: Keys earlier releases accepted, and why they are gone (said with the "unknown key" error).
REMOVED_KEYS = {
    "track.window_seconds": "removed: the window length is the model's own, see "
    "`streamguard model info`",
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    max_message_bytes: int = Field(1 << 20, ge=1024)
    max_connections: int = Field(1000, ge=1)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Host names the port answers to besides the bind address, localhost, 127.0.0.1, [::1]
    # ("*": any). Browser origins (scheme://host[:port]) whose pages may open WebSockets.
    allowed_hosts: list[str] = Field(default_factory=list)
    allowed_origins: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        return self

    @model_validator(mode="after")
    def _names(self) -> ServerSettings:
        from streamguard.server.names import host_key, origin_key

        for entry in self.allowed_hosts:
            if entry.strip() != "*" and host_key(entry) is None:
                raise ValueError(f"allowed_hosts: {entry[:60]!r} is not a host name or address")
        for entry in self.allowed_origins:
            if origin_key(entry) is None:
                raise ValueError(
                    f"allowed_origins: {entry[:60]!r} is not an origin like "
                    "https://dashboard.example.com (scheme, host, optional port; no path)"
                )
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def secret_value(value: SecretStr | None, path: Path | None, what: str) -> str | None:
    """A secret given in the config (``value``) or in a file (``path``: its first line, stripped;
    what systemd's ``LoadCredential=`` provides). An unreadable or empty file is one
    :class:`ConfigError` naming the key, never the secret."""
    if path is None:
        return value.get_secret_value() if value is not None else None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what}_file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what}_file {path} is not UTF-8 text") from None
    lines = text.strip().splitlines()
    if not lines or not lines[0].strip():
        raise ConfigError(f"{what}_file {path} is empty")
    return lines[0].strip()


def _one_of(value: SecretStr | None, path: Path | None, key: str) -> None:
    if value is not None and path is not None:
        raise ValueError(f"set {key} or {key}_file, not both")
    if value is not None and not value.get_secret_value().strip():
        raise ValueError(f"{key} is empty")


class AuthSettings(_Section):
    """Bearer tokens. ``token`` covers both surfaces; ``ingest_token`` (feeds) and
    ``alerts_token`` (subscribers, /metrics) override it for theirs. Each may come from a file."""

    token: SecretStr | None = None  # SecretStr: never shown by repr() or in logs
    token_file: Path | None = None
    ingest_token: SecretStr | None = None
    ingest_token_file: Path | None = None
    alerts_token: SecretStr | None = None
    alerts_token_file: Path | None = None
    allow_unauthenticated: bool = False

    @model_validator(mode="after")
    def _sources(self) -> AuthSettings:
        _one_of(self.token, self.token_file, "token")
        _one_of(self.ingest_token, self.ingest_token_file, "ingest_token")
        _one_of(self.alerts_token, self.alerts_token_file, "alerts_token")
        return self

    def token_value(self) -> str | None:
        """The shared token (``token`` or ``token_file``)."""
        return secret_value(self.token, self.token_file, "auth.token")

    def ingest_token_value(self) -> str | None:
        """What feeds must present: ``ingest_token`` if set, else ``token``."""
        own = secret_value(self.ingest_token, self.ingest_token_file, "auth.ingest_token")
        return own if own is not None else self.token_value()

    def alerts_token_value(self) -> str | None:
        """What subscribers and scrapers must present: ``alerts_token`` if set, else ``token``."""
        own = secret_value(self.alerts_token, self.alerts_token_file, "auth.alerts_token")
        return own if own is not None else self.token_value()

    @property
    def ingest_protected(self) -> bool:
        return any(
            v is not None
            for v in (self.ingest_token, self.ingest_token_file, self.token, self.token_file)
        )

    @property
    def alerts_protected(self) -> bool:
        return any(
            v is not None
            for v in (self.alerts_token, self.alerts_token_file, self.token, self.token_file)
        )


class ModelSettings(_Section):
    spec: str | None = None
    device: str = "auto"
    max_batch: int = Field(16, ge=1)
    max_wait_ms: float = Field(20.0, ge=0)
    batching: Literal["greedy", "deadline"] = "deadline"
    batch_budget_ms: float = Field(400.0, gt=0)
    max_lag_seconds: float = Field(5.0, gt=0)
    queue_size: int = Field(256, ge=1)
    threads: int | None = Field(None, ge=1)
    torchscript: bool = True
    backend: Literal[BACKENDS] = "auto"  # streamguard/backends.py
    worker: Literal["thread", "process"] = "thread"
    workers: int = Field(2, ge=1, le=64)


def _check_path(path: str) -> str:
    if not path.startswith("/") or "?" in path:
        raise ValueError(f"must be an absolute URL path like '/alerts', got {path!r}")
    return path


class WebSocketSourceSettings(_Section):
    enabled: bool = True
    path: str

    @model_validator(mode="after")
    def _path(self) -> WebSocketSourceSettings:
        _check_path(self.path)
        return self


class TwilioSourceSettings(WebSocketSourceSettings):
    """``auth_token`` + ``public_url``: require Twilio's ``X-Twilio-Signature`` on the handshake."""

    path: str = "/twilio"
    auth_token: SecretStr | None = None
    auth_token_file: Path | None = None
    public_url: str | None = None

    @model_validator(mode="after")
    def _signature(self) -> TwilioSourceSettings:
        _one_of(self.auth_token, self.auth_token_file, "auth_token")
        has_token = self.auth_token is not None or self.auth_token_file is not None
        if has_token and not self.public_url:
            raise ValueError(
                "auth_token needs public_url: the exact <Stream url> Twilio connects to"
            )
        if self.public_url is not None:
            if not has_token:
                raise ValueError("public_url is only used with auth_token (or auth_token_file)")
            if not self.public_url.startswith(("wss://", "ws://")) or "?" in self.public_url:
                raise ValueError(
                    f"public_url must be a ws(s):// URL without a query string, "
                    f"got {self.public_url[:60]!r}"
                )
        return self

    @property
    def signed(self) -> bool:
        return self.public_url is not None

    def auth_token_value(self) -> str | None:
        return secret_value(self.auth_token, self.auth_token_file, "sources.twilio.auth_token")


class IngestSourceSettings(WebSocketSourceSettings):
    path: str = "/ingest"


class AudioHookSourceSettings(WebSocketSourceSettings):
    """Genesys Cloud AudioHook Monitor (docs/sources.md). Off unless configured: it needs the
    API key (and, for signed requests, the client secret) of the Genesys integration."""

    enabled: bool = False
    path: str = "/audiohook"
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    include_ani: bool = False
    max_signature_age_seconds: float = Field(10.0, gt=3.0, le=3600.0)

    @model_validator(mode="after")
    def _credentials(self) -> AudioHookSourceSettings:
        _one_of(self.api_key, self.api_key_file, "api_key")
        _one_of(self.client_secret, self.client_secret_file, "client_secret")
        if self.enabled and self.api_key is None and self.api_key_file is None:
            raise ValueError("enabled without api_key (or api_key_file): Genesys sends one")
        if self.client_secret is not None:
            from streamguard.server.audiohook_auth import decode_client_secret

            decode_client_secret(self.client_secret.get_secret_value())
        return self

    def api_key_value(self) -> str | None:
        return secret_value(self.api_key, self.api_key_file, "sources.audiohook.api_key")

    def client_secret_bytes(self) -> bytes | None:
        """The HMAC key (the base64-decoded client secret), or None when none is configured."""
        from streamguard.server.audiohook_auth import decode_client_secret

        text = secret_value(
            self.client_secret, self.client_secret_file, "sources.audiohook.client_secret"
        )
        if text is None:
            return None
        try:
            return decode_client_secret(text)
        except ValueError as exc:
            raise ConfigError(f"sources.audiohook.client_secret: {exc}") from None


class AudioSocketSourceSettings(_Section):
    """Asterisk AudioSocket over TCP: Asterisk connects to us, one connection per call.

    The protocol has no authentication, so listening beyond loopback requires ``allow``: the
    addresses (or CIDR networks) of the Asterisk servers; other peers are closed at once.
    """

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(9092, ge=0, le=65535)
    allow: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _peers(self) -> AudioSocketSourceSettings:
        for entry in self.allow:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"allow: {entry!r} is not an IP address or network") from None
        if self.enabled and not _is_loopback(self.host) and not self.allow:
            raise ValueError(
                "AudioSocket has no authentication: listening beyond loopback needs allow = "
                "[the Asterisk servers' addresses]"
            )
        return self


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RtpPayloadType(_Section):
    encoding: Literal["pcmu", "pcma", "pcm_s16be", "pcm_s16le"]
    rate: int = Field(ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE)  # what every source core accepts
    channels: Literal[1] = Field(1, description="RTP audio is read as mono; stereo L16 is refused")


class RtpSourceSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(5004, ge=0, le=65535)
    idle_timeout_seconds: float = Field(5.0, gt=0)
    jitter_packets: int = Field(8, ge=0)
    rtcp: bool = True
    rtcp_port: int | None = Field(None, ge=0, le=65535)
    allow: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    max_packets_per_second: float = Field(200.0, gt=0)
    max_ssrcs_per_sender: int = Field(4, ge=1)
    payload_types: dict[str, RtpPayloadType] = Field(
        default_factory=lambda: {"96": RtpPayloadType(encoding="pcm_s16be", rate=16000)}
    )

    @model_validator(mode="after")
    def _pt_keys(self) -> RtpSourceSettings:
        for key in self.payload_types:
            if not key.isdigit() or not 0 <= int(key) <= 127:
                raise ValueError(f"payload type keys must be 0..127, got {key!r}")
        for network in self.allow:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"allow: not a network (CIDR) or address: {network!r}") from None
        return self


class KvsSourceSettings(_Section):
    """Amazon Connect calls read from Kinesis Video Streams (docs/sources.md). Off by default:
    it needs boto3 (``streamguard[kvs]``) and AWS credentials from boto3's default chain only
    (environment, shared config, task or instance role): no credential belongs here."""

    enabled: bool = False
    region: str | None = None  # None: each stream ARN's own region
    endpoint_url: str | None = None  # the Kinesis Video control plane (a VPC endpoint)
    max_streams: int = Field(100, ge=1)
    idle_timeout_seconds: float = Field(10.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _endpoint(self) -> KvsSourceSettings:
        if self.endpoint_url is not None and not self.endpoint_url.startswith(
            ("https://", "http://")
        ):
            raise ValueError(f"endpoint_url must be an http(s) URL, got {self.endpoint_url[:60]!r}")
        if self.region is not None and not re.fullmatch(r"[a-z]{2}(-[a-z0-9]+)+-\d+", self.region):
            raise ValueError(f"region {self.region[:30]!r} is not an AWS region name")
        return self


class AcsSourceSettings(WebSocketSourceSettings):
    """Azure Communication Services media streaming (docs/sources.md): a WebSocket path ACS
    connects to, guarded by the ingest token (``?token=`` in the transport URL)."""

    enabled: bool = False
    path: str = "/acs"
    raw_id_tracks: bool = False  # name tracks by participantRawID (phone numbers!), not p1, p2
    max_participants: int = Field(8, ge=1, le=64)


class MicSourceSettings(_Section):
    enabled: bool = False
    device: str | int | None = None
    sample_rate: int = Field(16000, ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE)
    channels: int = Field(1, ge=1)
    block_ms: int = Field(30, ge=5, le=1000)


class SourcesSettings(_Section):
    twilio: TwilioSourceSettings = Field(default_factory=TwilioSourceSettings)
    ingest: IngestSourceSettings = Field(default_factory=IngestSourceSettings)
    rtp: RtpSourceSettings = Field(default_factory=RtpSourceSettings)
    mic: MicSourceSettings = Field(default_factory=MicSourceSettings)
    audiohook: AudioHookSourceSettings = Field(default_factory=AudioHookSourceSettings)
    audiosocket: AudioSocketSourceSettings = Field(default_factory=AudioSocketSourceSettings)
    kvs: KvsSourceSettings = Field(default_factory=KvsSourceSettings)
    acs: AcsSourceSettings = Field(default_factory=AcsSourceSettings)


class AlertsSettings(_Section):
    path: str = "/alerts"
    subscriber_queue: int = Field(256, ge=1)
    history: int = Field(1000, ge=0)
    # A subscriber that loses this many events in a row without reading is disconnected.
    disconnect_after_lost: int = Field(4096, ge=1)
    # Seconds a closing subscriber gets to answer the close handshake before it is cut off.
    close_timeout_seconds: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _path(self) -> AlertsSettings:
        _check_path(self.path)
        return self


class EventsSettings(_Section):
    """The event log behind the alert bus (docs/operations.md, "Durability, resume, fleet")."""

    backend: Literal["sqlite", "redis", "memory"] = "sqlite"
    path: str | None = None  # None: $STATE_DIRECTORY/events.db, else the per-user state dir
    synchronous: Literal["normal", "full"] = "normal"
    commit_interval_ms: float = Field(2.0, ge=0, le=1000)
    commit_max_events: int = Field(1000, ge=1)
    retain_hours: float = Field(168.0, gt=0)
    max_mb: float = Field(1024.0, gt=0)
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_stream: str = Field("streamguard:events", min_length=1)
    redis_maxlen: int = Field(1_000_000, ge=1)
    spool_max_events: int = Field(100_000, ge=0)

    def resolved_path(self) -> Path:
        from streamguard.alerts.store import default_path

        return Path(self.path).expanduser() if self.path else default_path()


class EvidenceSettings(_Section):
    """``[evidence]``: audio kept for alerts (docs/operations.md, "Evidence audio").

    Read by :class:`streamguard.evidence.EvidenceStore` and its per-track recorder. Off by
    default: call audio is personal data, kept only where the operator chose to.
    """

    keep: Literal["none", "alerts", "all"] = "none"
    path: str | None = None  # None: the folder "evidence" beside the event log
    retention_days: float = Field(30.0, gt=0)
    max_bytes: int = Field(10 * 1024**3, ge=1)
    sample_rate: int | None = Field(None, ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE)

    def resolved_path(self, events: EventsSettings) -> Path:
        """``path``, else ``evidence/`` in the event log's directory (the state directory)."""
        if self.path:
            return Path(self.path).expanduser()
        return events.resolved_path().parent / "evidence"


class TracksSettings(_Section):
    """``[tracks]``: which legs of a call are scored (the others are counted, not scored)."""

    score: list[str] | None = None  # None: every track

    @model_validator(mode="after")
    def _names(self) -> TracksSettings:
        if self.score is not None:
            if not self.score:
                raise ValueError("score is empty: list track names, or leave it unset for all")
            for name in self.score:
                if not name.strip():
                    raise ValueError("score: a track name is empty")
        return self


class AllowListSettings(_Section):
    """``[allowlist]``: the operator's own synthetic voices, never alerted on
    (docs/operations.md, "Allow-list"). Active when the folder holds an enrolled voice."""

    path: str | None = None  # None: the folder "allowlist" beside the event log
    threshold: float = Field(0.8, gt=0, le=1)
    min_p_fake: float = Field(0.25, ge=0, le=1)

    def resolved_path(self, events: EventsSettings) -> Path:
        """``path``, else ``allowlist/`` in the event log's directory (the state directory)."""
        if self.path:
            return Path(self.path).expanduser()
        return events.resolved_path().parent / "allowlist"


def should_score(track: str, settings: TracksSettings) -> bool:
    """Whether a track of this name is scored under ``[tracks] score`` (unset: every track).

    Names are compared exactly as the feed gives them (``inbound``, ``outbound``, a stereo
    channel's ``0``/``1``, an RTP SSRC), the names events carry in ``track``.
    """
    return settings.score is None or track in settings.score


class WebhookSettings(_Section):
    """One ``[[webhooks]]`` endpoint: signed POSTs of matching events, at least once.

    ``scheme`` picks the signature headers: ``streamguard`` (``Streamguard-Signature``, the
    default) or ``standard-webhooks`` (``webhook-id``/``-timestamp``/``-signature``, with a
    ``whsec_`` secret and/or an Ed25519 ``signing_key``). ``previous_secrets`` are old secrets
    still signed with, beside the current one, while receivers move over (rotation).
    """

    url: str
    name: str | None = None  # cursor and metrics label; default: the URL's host and path
    scheme: Literal["streamguard", "standard-webhooks"] = "streamguard"
    secret: SecretStr | None = None
    secret_file: str | None = None
    previous_secrets: list[SecretStr] = Field(default_factory=list)
    previous_secrets_file: str | None = None
    signing_key: SecretStr | None = None
    signing_key_file: str | None = None
    types: list[str] | None = None  # None: every type
    call_id: str | None = None
    max_attempts: int = Field(10, ge=1)
    backoff_seconds: float = Field(1.0, gt=0)
    max_backoff_seconds: float = Field(300.0, gt=0)
    timeout_seconds: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> WebhookSettings:
        from urllib.parse import urlsplit

        from streamguard.alerts.events import EVENT_TYPES

        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url must be http(s)://host/path, got {self.url!r}")
        if self.secret is not None and self.secret_file is not None:
            raise ValueError("set exactly one of secret and secret_file, not both")
        if self.signing_key is not None and self.signing_key_file is not None:
            raise ValueError("set signing_key or signing_key_file, not both")
        has_secret = self.secret is not None or self.secret_file is not None
        has_key = self.signing_key is not None or self.signing_key_file is not None
        if self.scheme == "streamguard":
            if not has_secret:
                raise ValueError("set exactly one of secret and secret_file")
            if has_key:
                raise ValueError('signing_key needs scheme = "standard-webhooks"')
        elif not (has_secret or has_key):
            raise ValueError("standard-webhooks needs a secret (whsec_...), a signing_key, or both")
        if (self.previous_secrets or self.previous_secrets_file) and not has_secret:
            raise ValueError("previous_secrets need a current secret")
        unknown = sorted(set(self.types or ()) - EVENT_TYPES)
        if unknown:
            raise ValueError(f"unknown event type(s): {', '.join(unknown)}")
        if self.scheme == "standard-webhooks":  # inline values: check their format now
            from streamguard.webhooks.signing import SignatureError
            from streamguard.webhooks.standard import decode_secret, load_signing_key

            try:
                for value in (self.secret, *self.previous_secrets):
                    if value is not None:
                        decode_secret(value.get_secret_value())
                if self.signing_key is not None:
                    load_signing_key(self.signing_key.get_secret_value())
            except SignatureError as exc:
                raise ValueError(str(exc)) from None
        return self

    @property
    def label(self) -> str:
        """The endpoint's name in its cursor, metrics and logs: ``name``, else the URL's host
        (and port) and path, never its userinfo (``https://user:password@host/...``)."""
        from urllib.parse import urlsplit

        if self.name:
            return self.name
        parts = urlsplit(self.url)
        return f"{parts.netloc.rpartition('@')[2]}{parts.path}"

    def _read(self, path: str, key: str) -> str:
        try:
            value = Path(path).expanduser().read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"webhook {self.label}: cannot read {key} {path}: {exc.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(f"webhook {self.label}: {key} {path} is not UTF-8 text") from None
        if not value:
            raise ConfigError(f"webhook {self.label}: {key} {path} is empty")
        return value

    def secret_value(self) -> str | None:
        """The current secret (``secret`` or ``secret_file``); None when only a key signs."""
        if self.secret is not None:
            return self.secret.get_secret_value()
        if self.secret_file is None:
            return None
        return self._read(self.secret_file, "secret_file")

    def previous_secret_values(self) -> list[str]:
        """Old secrets still signed with: ``previous_secrets``, then ``previous_secrets_file``
        (one per line)."""
        values = [s.get_secret_value() for s in self.previous_secrets]
        if self.previous_secrets_file is not None:
            text = self._read(self.previous_secrets_file, "previous_secrets_file")
            values += [line.strip() for line in text.splitlines() if line.strip()]
        return values

    def signing_key_value(self) -> str | None:
        """The Ed25519 signing key's text (``whsk_...`` or PEM), or None."""
        if self.signing_key is not None:
            return self.signing_key.get_secret_value()
        if self.signing_key_file is None:
            return None
        return self._read(self.signing_key_file, "signing_key_file")


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class LimitsSettings(_Section):
    max_calls: int = Field(200, ge=1)
    max_call_seconds: float = Field(14400, gt=0)
    max_calls_per_client: int = Field(0, ge=0)
    max_messages_per_second: float = Field(1000.0, ge=0)
    idle_timeout_seconds: float = Field(30.0, ge=0)
    handshake_timeout_seconds: float = Field(10.0, gt=0)


class TelemetrySettings(_Section):
    """Traces (streamguard/telemetry.py): off unless ``otlp_endpoint`` is set."""

    otlp_endpoint: str | None = None  # OTLP/HTTP collector URL; None = no traces, no SDK
    service_name: str = Field("streamguard", min_length=1)
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0)  # share of calls traced

    @model_validator(mode="after")
    def _endpoint(self) -> TelemetrySettings:
        if self.otlp_endpoint is not None:
            from urllib.parse import urlsplit

            parts = urlsplit(self.otlp_endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"otlp_endpoint {self.otlp_endpoint!r} is not an http:// or https:// URL"
                )
        return self


# The TOML dict for the Settings being built; a ContextVar (not a class attribute) so two loads
# in two threads or tasks never see each other's file.
_TOML_DATA: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("_TOML_DATA")
# Set while load_config checks the file on its own (no environment, no flags).
_FILE_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("_FILE_ONLY", default=False)


class _TomlDictSource(PydanticBaseSettingsSource):
    """Feeds the already-parsed TOML dict (load_config reads and checks the file itself)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return _TOML_DATA.get({}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_TOML_DATA.get({}))


class Settings(BaseSettings):
    """The daemon's whole configuration. Build it with :func:`load_config`."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMGUARD_",
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    track: TrackSettings = Field(default_factory=TrackSettings)
    smoothing: SmoothingSettings = Field(default_factory=SmoothingSettings)
    verdict: VerdictSettings = Field(default_factory=VerdictSettings)
    sources: SourcesSettings = Field(default_factory=SourcesSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    events: EventsSettings = Field(default_factory=EventsSettings)
    evidence: EvidenceSettings = Field(default_factory=EvidenceSettings)
    tracks: TracksSettings = Field(default_factory=TracksSettings)
    allowlist: AllowListSettings = Field(default_factory=AllowListSettings)
    webhooks: list[WebhookSettings] = Field(default_factory=list)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if _FILE_ONLY.get():
            return (_TomlDictSource(settings_cls),)
        return (init_settings, env_settings, _TomlDictSource(settings_cls))

    @model_validator(mode="after")
    def _distinct_paths(self) -> Settings:
        paths = {
            "alerts.path": self.alerts.path,
            "sources.twilio.path": self.sources.twilio.path,
            "sources.ingest.path": self.sources.ingest.path,
            "sources.audiohook.path": self.sources.audiohook.path,
            "sources.acs.path": self.sources.acs.path,
        }
        seen: dict[str, str] = {"/healthz": "(built-in)", "/metrics": "(built-in)"}
        seen.update(dict.fromkeys(("/", "/api/status"), "the dashboard"))
        for key, path in paths.items():
            if path in seen:
                raise ValueError(f"{key} {path!r} is already used by {seen[path]}")
            if path.startswith("/dashboard/"):
                raise ValueError(f"{key} {path!r}: /dashboard/ holds the dashboard's files")
            seen[path] = key
        return self

    @model_validator(mode="after")
    def _acs_exposed(self) -> Settings:
        """ACS's path is an ingest surface: beyond loopback it needs the ingest token (the
        start-up rule of the other feeds, docs/operations.md "Authentication")."""
        acs = self.sources.acs
        if (
            acs.enabled
            and not _is_loopback(self.server.host)
            and not self.auth.ingest_protected
            and not self.auth.allow_unauthenticated
        ):
            raise ValueError(
                f"sources.acs: {acs.path} beyond loopback needs [auth] ingest_token (or token)"
            )
        return self

    def reloadable(self) -> dict[str, BaseModel]:
        """The sections a SIGHUP applies (smoothing incl. thresholds, verdict, logging)."""
        return {name: getattr(self, name) for name in RELOADABLE_SECTIONS}


def _printable(part: object) -> str:
    text = str(part)
    return text if text.isprintable() else repr(text)[1:-1]


def _format_error(exc: ValidationError, origin: str, errors: list[Any] | None = None) -> str:
    """One line for ``errors`` (default: all of ``exc``'s); a file check passes its own."""
    blame_env = errors is None
    errors = exc.errors() if errors is None else errors
    first = errors[0]
    # Keys come from the file or the environment: never let one break the line.
    loc = ".".join(_printable(p) for p in first["loc"]) or "(top level)"
    # Blame the environment variable when the bad value came from one (or a parent section's).
    parts = [str(p).upper() for p in first["loc"]]
    for n in range(len(parts), 0, -1) if blame_env else ():
        name = "STREAMGUARD_" + "__".join(parts[:n])
        if name in os.environ:
            origin = f"environment {name}"
            break
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
        if loc in REMOVED_KEYS:
            msg += f" ({REMOVED_KEYS[loc]})"
    detail = ""
    secret = any(
        str(p) in ("auth", "api_key", "audiohook", "webhooks")
        or "token" in str(p)
        or "secret" in str(p)
        for p in first["loc"]
    )
    if "input" in first and first["type"] != "extra_forbidden" and not secret:
        shown = repr(first["input"])
        detail = f" (got {shown[:60] + '...' if len(shown) > 60 else shown})"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{origin}: {loc}: {msg}{detail}{more}"


def load_config(
    path: Path | str | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Read the config: ``overrides`` > ``STREAMGUARD_*`` env > TOML ``path`` > defaults.

    ``path=None`` means no file (defaults + env). A given path that is missing, unreadable or
    not TOML, and any invalid or unknown key, raises :class:`ConfigError` with one line.
    """
    _check_environment(os.environ)
    data: dict[str, Any] = {}
    origin = "config"
    if path is not None:
        path = Path(path)
        origin = str(path)
        data = read_toml(path)
    token = _TOML_DATA.set(data)
    try:
        if path is not None:
            _check_file_alone(origin)
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, origin)) from None
    finally:
        _TOML_DATA.reset(token)


#: Errors a file may have on its own because the environment or a flag completes it (an
#: ``api_key`` from the environment for an ``enabled`` AudioHook): left to the merged check.
_NEEDS_THE_REST = frozenset({"value_error", "assertion_error", "missing"})


def _check_file_alone(origin: str) -> None:
    """Validate the file's own values (in ``_TOML_DATA``), without the environment or flags.

    The merged check never sees a value that an override replaced, so ``port = "abc"`` in the
    file would pass whenever ``--port`` is given, and fail later when it is not: a wrong type
    or range in the file stops the daemon whatever overrides it (docs/operations.md).
    """
    mode = _FILE_ONLY.set(True)
    try:
        Settings()
    except ValidationError as exc:
        own = [e for e in exc.errors() if e["type"] not in _NEEDS_THE_REST]
        if own:
            raise ConfigError(_format_error(exc, origin, own)) from None
    finally:
        _FILE_ONLY.reset(mode)


ENV_PREFIX = "STREAMGUARD_"
#: ``STREAMGUARD_*`` variables that are settings of the process, not config keys.
#: ``STREAMGUARD_CACHE_DIR``: built serving models (model/serving.py);
#: ``STREAMGUARD_WEBHOOK_SECRET``: the secret ``streamguard webhook verify`` checks with (a
#: receiver's, set in the same shells and units that run the daemon and ``streamguard events``).
PROCESS_VARIABLES = frozenset({"STREAMGUARD_CACHE_DIR", "STREAMGUARD_WEBHOOK_SECRET"})


def _check_environment(environ: Mapping[str, str]) -> None:
    """Refuse ``STREAMGUARD_<SECTION>...`` variables naming no section.

    pydantic-settings reads only the names it expects, so ``STREAMGUARD_SEVRER__PORT=9000``
    would be ignored in silence while ``STREAMGUARD_SERVER__PORTT`` stops the daemon; both are
    the same typo and both are one line now.
    """
    sections = set(Settings.model_fields)
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX) or name.upper() in PROCESS_VARIABLES:
            continue
        section = name[len(ENV_PREFIX) :].split("__", 1)[0].lower()
        if section not in sections:
            raise ConfigError(
                f"environment {name}: unknown section {section!r} "
                f"(sections: {', '.join(sorted(sections))})"
            )


def apply_reload(current: Settings, new: Settings) -> tuple[Settings, list[str]]:
    """Take the reloadable sections from ``new``; list the other sections that changed.

    The daemon logs the returned names as "needs a restart" and keeps running with
    ``current``'s values for them.
    """
    ignored = [
        name
        for name in Settings.model_fields
        if name not in RELOADABLE_SECTIONS and getattr(current, name) != getattr(new, name)
    ]
    merged = current.model_copy(update=new.reloadable())
    return merged, ignored

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
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streamguard.alerts.smoothing import SmoothingSettings
from streamguard.audio.track import TrackSettings
from streamguard.errors import ConfigError

RELOADABLE_SECTIONS = ("smoothing", "verdict", "logging")
"""Sections a SIGHUP re-reads and applies to running and new tracks; all else needs a restart."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    max_message_bytes: int = Field(1 << 20, ge=1024)
    max_connections: int = Field(1000, ge=1)


class AuthSettings(_Section):
    token: SecretStr | None = None  # SecretStr: never shown by repr() or in logs

    def token_value(self) -> str | None:
        return self.token.get_secret_value() if self.token is not None else None


class ModelSettings(_Section):
    spec: str | None = None
    device: str = "auto"
    max_batch: int = Field(16, ge=1)
    max_wait_ms: float = Field(20.0, ge=0)
    max_lag_seconds: float = Field(5.0, gt=0)
    queue_size: int = Field(256, ge=1)
    threads: int | None = Field(None, ge=1)
    torchscript: bool = True
    backend: Literal[
        "auto", "eager", "torchscript", "onnxruntime", "onnxruntime-int8", "cuda-graphs"
    ] = "auto"
    worker: Literal["thread", "process"] = "thread"
    workers: int = Field(2, ge=1, le=64)


class VerdictSettings(_Section):
    min_speech_seconds: float = Field(2.0, ge=0)


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
    path: str = "/twilio"


class IngestSourceSettings(WebSocketSourceSettings):
    path: str = "/ingest"


class RtpPayloadType(_Section):
    encoding: Literal["pcmu", "pcma", "pcm_s16be", "pcm_s16le"]
    rate: int = Field(ge=8000, le=48000)
    channels: Literal[1] = Field(1, description="RTP audio is read as mono; stereo L16 is refused")


class RtpSourceSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(5004, ge=0, le=65535)
    idle_timeout_seconds: float = Field(5.0, gt=0)
    jitter_packets: int = Field(8, ge=0)
    payload_types: dict[str, RtpPayloadType] = Field(
        default_factory=lambda: {"96": RtpPayloadType(encoding="pcm_s16be", rate=16000)}
    )

    @model_validator(mode="after")
    def _pt_keys(self) -> RtpSourceSettings:
        for key in self.payload_types:
            if not key.isdigit() or not 0 <= int(key) <= 127:
                raise ValueError(f"payload type keys must be 0..127, got {key!r}")
        return self


class MicSourceSettings(_Section):
    enabled: bool = False
    device: str | int | None = None
    sample_rate: int = Field(16000, ge=8000)
    channels: int = Field(1, ge=1)
    block_ms: int = Field(30, ge=5, le=1000)


class SourcesSettings(_Section):
    twilio: TwilioSourceSettings = Field(default_factory=TwilioSourceSettings)
    ingest: IngestSourceSettings = Field(default_factory=IngestSourceSettings)
    rtp: RtpSourceSettings = Field(default_factory=RtpSourceSettings)
    mic: MicSourceSettings = Field(default_factory=MicSourceSettings)


class AlertsSettings(_Section):
    path: str = "/alerts"
    subscriber_queue: int = Field(256, ge=1)
    history: int = Field(1000, ge=0)

    @model_validator(mode="after")
    def _path(self) -> AlertsSettings:
        _check_path(self.path)
        return self


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class LimitsSettings(_Section):
    max_calls: int = Field(200, ge=1)
    max_call_seconds: float = Field(14400, gt=0)


# The TOML dict for the Settings being built; a ContextVar (not a class attribute) so two loads
# in two threads or tasks never see each other's file.
_TOML_DATA: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("_TOML_DATA")


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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlDictSource(settings_cls))

    @model_validator(mode="after")
    def _distinct_paths(self) -> Settings:
        paths = {
            "alerts.path": self.alerts.path,
            "sources.twilio.path": self.sources.twilio.path,
            "sources.ingest.path": self.sources.ingest.path,
        }
        seen: dict[str, str] = {"/healthz": "(built-in)", "/metrics": "(built-in)"}
        for key, path in paths.items():
            if path in seen:
                raise ValueError(f"{key} {path!r} is already used by {seen[path]}")
            seen[path] = key
        return self

    def reloadable(self) -> dict[str, BaseModel]:
        """The sections a SIGHUP applies (smoothing incl. thresholds, verdict, logging)."""
        return {name: getattr(self, name) for name in RELOADABLE_SECTIONS}

    def protected_paths(self) -> frozenset[str]:
        """Paths that require ``auth.token`` when one is set.

        ``/twilio`` is not among them: Twilio cannot send an Authorization header or keep a
        query string on a Media Stream URL; protect it at the network edge instead.
        """
        return frozenset({self.alerts.path, self.sources.ingest.path})


def _format_error(exc: ValidationError, origin: str) -> str:
    errors = exc.errors()
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    # Blame the environment variable when the bad value came from one (or a parent section's).
    parts = [str(p).upper() for p in first["loc"]]
    for n in range(len(parts), 0, -1):
        name = "STREAMGUARD_" + "__".join(parts[:n])
        if name in os.environ:
            origin = f"environment {name}"
            break
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    detail = ""
    secret = any(str(p) in ("token", "auth") for p in first["loc"])
    if "input" in first and first["type"] != "extra_forbidden" and not secret:
        shown = repr(first["input"])
        detail = f" (got {shown[:60] + '...' if len(shown) > 60 else shown})"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{origin}: {loc}: {msg}{detail}{more}"


def read_toml(path: Path, what: str = "config file") -> dict[str, Any]:
    """Parse a TOML file; a missing, unreadable or malformed one is one :class:`ConfigError`."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_config(
    path: Path | str | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Read the config: ``overrides`` > ``STREAMGUARD_*`` env > TOML ``path`` > defaults.

    ``path=None`` means no file (defaults + env). A given path that is missing, unreadable or
    not TOML, and any invalid or unknown key, raises :class:`ConfigError` with one line.
    """
    data: dict[str, Any] = {}
    origin = "config"
    if path is not None:
        path = Path(path)
        origin = str(path)
        data = read_toml(path)
    token = _TOML_DATA.set(data)
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, origin)) from None
    finally:
        _TOML_DATA.reset(token)


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

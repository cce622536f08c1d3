"""Who may use which path of the daemon's port: the access rules, as a pure decision.

The daemon's port has three surfaces, each guarded on its own (docs/operations.md,
"Authentication"):

* **ingest** (``/ingest``): the ingest token (``[auth] ingest_token``, else ``token``);
* **twilio** (``/twilio``): a valid ``X-Twilio-Signature`` when ``[sources.twilio] auth_token``
  is set, or the ingest token (Telnyx, which does not sign, sends it as ``?token=`` in its
  ``stream_url``, or as a bearer ``stream_auth_token``);
* **alerts** (``/alerts``, ``/metrics`` and every ``/api/*`` path, the dashboard's data): the alerts
  token (``[auth] alerts_token``, else ``token``). ``/healthz`` stays open, but tells only its
  status to a request without it.

A guarded path with none of its credentials configured is open (the default, on loopback).
Refusals happen at the HTTP handshake, before any WebSocket exists: 401 when no credential was
presented, 403 when a wrong one was; the body says no more than that. Tokens and signatures are
compared in constant time.

Before any of that, every request names one of the daemon's own hosts (:class:`HostPolicy`,
``[server] allowed_hosts``: a page on another site that rebinds its DNS name to 127.0.0.1 is
still sent with its own ``Host``), and a browser-originated WebSocket (one with an ``Origin``)
comes from an origin the operator listed (:func:`origin_key`, ``[server] allowed_origins``),
or, for ``/alerts``, from the daemon's own page.

:func:`exposure_problem` is the start-up rule: listening beyond loopback with a surface
unprotected is refused (one line naming the missing key) unless
``[auth] allow_unauthenticated = true``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

from streamguard.server.httputil import request_token, token_matches
from streamguard.server.names import host_key, origin_key
from streamguard.server.twilio_signature import SIGNATURE_HEADER, TwilioSignature

if TYPE_CHECKING:
    from websockets.http11 import Request

    from streamguard.config import Settings

__all__ = [
    "AccessPolicy",
    "Guard",
    "HostPolicy",
    "Refusal",
    "exposure_problem",
    "host_key",
    "is_loopback",
    "origin_key",
]

#: Host names every daemon answers to, beside its bind address and ``[server] allowed_hosts``.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


class HostPolicy:
    """Which ``Host`` headers the daemon answers: its own names and addresses only.

    A browser tricked by DNS rebinding (``rebind.evil.example`` now resolving to 127.0.0.1)
    sends ``Host: rebind.evil.example``, and the matching ``Origin``, so a same-origin check
    alone lets it through; refusing unknown hosts does not. ``*`` among the names turns the
    check off (behind a proxy that checks it, say).
    """

    def __init__(self, names: Iterable[str]) -> None:
        keys = [name.strip() for name in names]
        self.any = "*" in keys
        self.names = frozenset(k for k in (host_key(n) for n in keys if n != "*") if k)

    @classmethod
    def for_server(cls, bind_host: str, allowed: Iterable[str] = ()) -> HostPolicy:
        """The bind address, localhost, 127.0.0.1 and [::1], plus ``allowed``."""
        return cls([bind_host, *LOOPBACK_HOSTS, *allowed])

    def allows(self, host: str | None) -> bool:
        if self.any:
            return True
        key = host_key(host) if host is not None else None
        return key is not None and key in self.names


METRICS_PATH = "/metrics"
#: Every path under it is one ``/api`` table's (:mod:`streamguard.server.api`), guarded as one.
API_PREFIX = "/api/"
#: The one ``/api`` path a feed's credential opens (the ingest token, not the alerts token): a
#: platform that starts a call's audio (the Amazon Connect Lambda) should not be able to read
#: every call's alerts.
KVS_STREAMS_PATH = "/api/kvs/streams"


class Refusal(NamedTuple):
    """An HTTP refusal of a handshake: ``status`` 401/403, ``reason`` the metrics label."""

    status: Literal[401, 403]
    reason: Literal["auth", "signature"]
    surface: str


@dataclass(frozen=True)
class Guard:
    """What one path needs: a bearer ``token`` and/or a Twilio ``signature`` (either will do)."""

    surface: str
    token: str | None = None
    signature: TwilioSignature | None = None

    @property
    def open(self) -> bool:
        return self.token is None and self.signature is None

    def check(self, request: Request) -> Refusal | None:
        if self.open:
            return None
        given = request_token(request) if self.token is not None else None
        signed = request.headers.get(SIGNATURE_HEADER) if self.signature is not None else None
        if self.token is not None and token_matches(self.token, given):
            return None
        if self.signature is not None and self.signature.valid(signed):
            return None
        if given is None and signed is None:
            reason = "auth" if self.token is not None else "signature"
            return Refusal(401, reason, self.surface)
        return Refusal(403, "signature" if signed is not None else "auth", self.surface)


class AccessPolicy:
    """The guards of one daemon's paths (paths without a guard are public)."""

    def __init__(self, guards: dict[str, Guard] | None = None) -> None:
        self.guards = dict(guards or {})

    @classmethod
    def single_token(cls, token: str | None, paths) -> AccessPolicy:
        """One token for the given paths (the simple case, and what tests of the port use)."""
        return cls({path: Guard("alerts", token=token) for path in paths} if token else {})

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        """Read the tokens (and token files) now: a missing file stops start-up in one line."""
        auth = settings.auth
        ingest, alerts = auth.ingest_token_value(), auth.alerts_token_value()
        twilio = settings.sources.twilio
        signature = None
        if twilio.signed:
            token = twilio.auth_token_value()
            assert token is not None and twilio.public_url is not None  # the config checks
            signature = TwilioSignature(token, twilio.public_url)
        return cls(
            {
                settings.alerts.path: Guard("alerts", token=alerts),
                METRICS_PATH: Guard("metrics", token=alerts),
                API_PREFIX: Guard("alerts", token=alerts),
                KVS_STREAMS_PATH: Guard("ingest", token=ingest),
                settings.sources.ingest.path: Guard("ingest", token=ingest),
                twilio.path: Guard("twilio", token=ingest, signature=signature),
            }
        )

    def guard(self, path: str) -> Guard | None:
        """The guard of ``path`` (without its query): its own, else (under :data:`API_PREFIX`)
        the ``/api`` table's; None when the path is public."""
        guard = self.guards.get(path)
        if guard is None and path.startswith(API_PREFIX):
            guard = self.guards.get(API_PREFIX)
        return guard

    def check(self, path: str, request: Request) -> Refusal | None:
        """None to let ``request`` (for ``path``, without its query) through, else why not."""
        guard = self.guard(path)
        return None if guard is None else guard.check(request)

    def surface(self, path: str) -> str | None:
        guard = self.guard(path)
        return guard.surface if guard is not None else None

    def is_open(self, path: str) -> bool:
        """Whether ``path`` needs no credential (no guard, or one with nothing configured)."""
        guard = self.guard(path)
        return guard is None or guard.open

    def may_see_details(self, request: Request) -> bool:
        """Whether ``request`` may read more than ``/healthz``'s status: when the alerts
        surface is open, or the request carries the alerts token."""
        return self.check(METRICS_PATH, request) is None


def is_loopback(host: str) -> bool:
    """True for an address (or ``localhost``) that only this machine can reach."""
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname: it may resolve to anything, so not loopback


def exposure_problem(settings: Settings) -> str | None:
    """Why the daemon must not start as configured, or None.

    Beyond loopback every enabled surface needs its credential, unless
    ``[auth] allow_unauthenticated`` says the operator protects them some other way (a proxy
    that authenticates, a private network).
    """
    s = settings
    if is_loopback(s.server.host) or s.auth.allow_unauthenticated:
        return None
    missing = []
    if not s.auth.alerts_protected:
        missing.append(f"{s.alerts.path} and /metrics need [auth] alerts_token (or token)")
    if s.sources.ingest.enabled and not s.auth.ingest_protected:
        missing.append(f"{s.sources.ingest.path} needs [auth] ingest_token (or token)")
    if s.sources.twilio.enabled and not (s.sources.twilio.signed or s.auth.ingest_protected):
        missing.append(
            f"{s.sources.twilio.path} needs [sources.twilio] auth_token and public_url "
            "(or an ingest token)"
        )
    if not missing:
        return None
    return (
        f"refusing to listen on {s.server.host}:{s.server.port} with a surface unprotected: "
        + "; ".join(missing)
        + " (or set [auth] allow_unauthenticated = true)"
    )

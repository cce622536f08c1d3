"""TLS for the daemon's one port (``[server] tls_cert`` / ``tls_key``): wss:// and https://.

Twilio only connects to ``wss://``; with a certificate the daemon can take it directly, without a
TLS-terminating proxy in front. TLS 1.2 is the floor (what Twilio and browsers speak); the
certificate file may hold the full chain. A missing or mismatched file is one line at start-up.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from streamguard.errors import ConfigError

__all__ = ["server_context"]


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side context serving ``cert`` (PEM, chain allowed) with ``key`` (PEM)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except FileNotFoundError as exc:
        raise ConfigError(f"server.tls: no such file: {exc.filename}") from None
    except PermissionError as exc:
        raise ConfigError(f"server.tls: cannot read {exc.filename}: permission denied") from None
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        raise ConfigError(
            f"server.tls: cannot use certificate {cert} with key {key}: {reason}"
        ) from None
    except OSError as exc:
        raise ConfigError(f"server.tls: cannot read {cert} / {key}: {exc.strerror}") from None
    return context

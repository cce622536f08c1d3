"""The CLI's side of the daemon's ``/api/*`` (when a running daemon owns the event log).

``streamguard label`` and ``streamguard evidence delete`` write to the log themselves when no
daemon runs (:func:`streamguard.alerts.oneshot.publish_once`); while one runs, the SQLite log is
its alone, so they ask it over HTTP on its own port (``[server] host``/``port``), with the
alerts token when one is configured (``Authorization: Bearer``, never in the URL).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from streamguard.errors import StreamguardError

__all__ = ["api_request"]


def _base_url(settings: Any) -> str:
    host = settings.server.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if getattr(settings.server, "tls_cert", None) else "http"
    return f"{scheme}://{host}:{settings.server.port}"


def api_request(
    settings: Any, method: str, path: str, body: Any = None, *, timeout: float = 10.0
) -> tuple[int, Any]:
    """``method path`` on the daemon ``settings`` describe; returns ``(status, parsed JSON or
    None)``. Raises one line when the daemon cannot be reached or does not serve ``path``."""
    url = _base_url(settings) + path
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    token = settings.auth.alerts_token_value()
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StreamguardError(
            f"cannot reach the daemon at {_base_url(settings)}: {reason}"
        ) from None
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = None
    if status == 404 and not (isinstance(parsed, dict) and "error" in parsed):
        raise StreamguardError(
            f"the running daemon does not serve {method} {path.split('?')[0]} (an older "
            "version?); stop it, or upgrade it"
        )
    if status in (401, 403):
        raise StreamguardError(
            f"the daemon refused {method} {path}: {status} (set [auth] alerts_token or token "
            "in the config the command reads)"
        )
    return status, parsed

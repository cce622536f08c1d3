"""Host and origin names as the front door compares them (pure, no imports of the daemon).

Owns :func:`host_key` and :func:`origin_key`: the normal form of a ``Host`` header, an
``Origin`` and the ``[server] allowed_hosts`` / ``allowed_origins`` entries. Apart from
:mod:`streamguard.server.access` so the config schema can validate those entries without
importing the access rules, which name the config's types (no import cycle, not even one for
type checking).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["host_key", "origin_key"]


def host_key(value: str) -> str | None:
    """The host part of a ``Host`` header or an ``allowed_hosts`` entry, compared without its
    port, case or trailing dot; IPv6 literals in brackets, in their shortest form. None when
    it is not a host at all."""
    text = value.strip().lower()
    if not text:
        return None
    if text.startswith("["):  # [v6] or [v6]:port
        end = text.find("]")
        literal, rest = text[1:end], text[end + 1 :]
        if end < 0 or (rest and not (rest[:1] == ":" and rest[1:].isdigit())):
            return None
    elif text.count(":") > 1:  # a bare IPv6 literal (an allowed_hosts entry written so)
        literal = text
    else:
        name, _, port = text.partition(":")
        if port and not port.isdigit():
            return None
        name = name.rstrip(".")
        ok = name and all(c.isalnum() or c in "-._" for c in name) and name.isascii()
        return name if ok else None
    try:
        return f"[{ipaddress.IPv6Address(literal).compressed}]"
    except ValueError:
        return None


def origin_key(value: str) -> str | None:
    """An ``Origin`` (or an ``allowed_origins`` entry) as ``scheme://host[:port]``: lower case,
    the scheme's default port dropped; None for ``null``, a path, or anything not http(s)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    host = host_key(f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname)
    if host is None:
        return None
    scheme = parts.scheme.lower()
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"

"""The image's HEALTHCHECK: exit 0 when the daemon's ``/healthz`` answers 200, else 1.

It reads the daemon's own config (the image's ``/etc/streamguard/streamguard.toml`` or the file
mounted over it, plus ``STREAMGUARD_*`` variables, through :func:`streamguard.config.load_config`)
so it probes the port, address and scheme the daemon really serves, whatever overrides them.
``/healthz`` needs no token: a probe carries no secret and learns only the status (200 for
``ready`` or ``degraded``, 503 while starting or draining).
"""

from __future__ import annotations

import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

from streamguard.config import load_config
from streamguard.errors import StreamguardError

CONFIG = Path("/etc/streamguard/streamguard.toml")
#: Addresses that mean "every interface": probe over loopback instead.
WILDCARDS = {"0.0.0.0", "::", ""}


def url(config: Path = CONFIG) -> str:
    settings = load_config(config if config.exists() else None)
    server = settings.server
    host = "127.0.0.1" if server.host in WILDCARDS else server.host
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if server.tls else "http"
    return f"{scheme}://{host}:{server.port}/healthz"


def main() -> int:
    try:
        target = url()
    except StreamguardError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1
    # The probe talks to this container's own daemon: its certificate names the public host.
    context = ssl._create_unverified_context() if target.startswith("https") else None
    try:
        with urllib.request.urlopen(target, timeout=4, context=context) as response:
            ok = response.status == 200
    except urllib.error.HTTPError as exc:  # 503: starting or draining
        print(f"healthcheck: {target}: HTTP {exc.code}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"healthcheck: {target}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

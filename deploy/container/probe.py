"""Probes of the daemon from inside its container, through its own ``/healthz``.

    probe.py health                       the image's HEALTHCHECK: exit 0 when /healthz is 200
    probe.py wait-idle [--max-seconds N]  Kubernetes' preStop: wait until no call is open

Both read the daemon's own config (the image's ``/etc/streamguard/streamguard.toml``, or the
file or ConfigMap mounted over it, plus ``STREAMGUARD_*`` variables, through
:func:`streamguard.config.load_config`), so they reach the port, address and scheme the daemon
really serves, whatever overrides them.

``health`` needs no token: a probe carries no secret and learns only the status (200 for
``ready`` or ``degraded``, 503 while starting or draining).

``wait-idle`` is the gentle half of a drain. Kubernetes runs it when a pod is to stop (a scale
down, a rollout, a node drain) after taking the pod out of its Service's endpoints, so no new
call arrives; it polls ``open_calls`` (with the alerts token: the details of ``/healthz``) and
returns when the open calls have ended by themselves, or after ``--max-seconds``. Only then is
SIGTERM sent, and the daemon ends whatever is still open with ``call_ended`` (reason
``shutdown``). It always exits 0: a preStop that fails only delays the same SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from streamguard.config import Settings, load_config
from streamguard.errors import StreamguardError

CONFIG = Path("/etc/streamguard/streamguard.toml")
#: Addresses that mean "every interface": probe over loopback instead.
WILDCARDS = {"0.0.0.0", "::", ""}


def settings(config: Path = CONFIG) -> Settings:
    return load_config(config if config.exists() else None)


def healthz_url(server) -> str:
    host = "127.0.0.1" if server.host in WILDCARDS else server.host
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if server.tls else 'http'}://{host}:{server.port}/healthz"


def fetch(url: str, token: str | None = None) -> tuple[int, dict]:
    """``GET url`` -> (HTTP status, JSON body); OSError when nothing answers."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    # The probe talks to this container's own daemon: its certificate names the public host.
    context = ssl._create_unverified_context() if url.startswith("https") else None
    try:
        with urllib.request.urlopen(request, timeout=4, context=context) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def health() -> int:
    try:
        url = healthz_url(settings().server)
        status, _ = fetch(url)
    except (StreamguardError, OSError) as exc:
        print(f"probe: health: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"probe: health: {url}: HTTP {status}", file=sys.stderr)
    return 0 if status == 200 else 1


def wait_idle(max_seconds: float, interval: float = 2.0) -> int:
    deadline = time.monotonic() + max_seconds
    try:
        config = settings()
        url, token = healthz_url(config.server), config.auth.alerts_token_value()
    except StreamguardError as exc:
        print(f"probe: wait-idle: {exc}", file=sys.stderr)
        return 0
    while True:
        try:
            status, body = fetch(url, token)
        except OSError:
            return 0  # nothing listens: nothing left to wait for
        open_calls = body.get("open_calls")
        if status != 200 or open_calls == 0 or open_calls is None:
            return 0  # draining already, idle, or no details to go by
        if time.monotonic() >= deadline:
            print(f"probe: wait-idle: {open_calls} call(s) still open after {max_seconds:.0f} s")
            return 0
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="probe.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("health", help="exit 0 when /healthz answers 200")
    wait = commands.add_parser("wait-idle", help="wait until no call is open (preStop)")
    wait.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args(argv)
    if args.command == "health":
        return health()
    return wait_idle(args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())

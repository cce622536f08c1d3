"""systemd readiness/watchdog notifications (sd_notify), stdlib only.

The protocol is one datagram of ``KEY=VALUE`` lines to the unix socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` means the Linux abstract namespace). With no
``NOTIFY_SOCKET`` (not under systemd, or in tests) every call is a cheap no-op, so the daemon
calls these unconditionally. The ``sdnotify`` package is unmaintained and ``systemd-python``
needs compiling; this is the self-contained form systemd documents.

Daemon usage::

    notifier = Notifier.from_env()
    notifier.ready()                       # after the model is loaded and ports are bound
    interval = notifier.watchdog_interval()
    # ...ping notifier.watchdog() every `interval` seconds FROM THE WORK LOOP itself,
    #    so a wedged loop stops the pings and systemd restarts the service.
    notifier.reloading(); ...; notifier.ready()   # around a SIGHUP reload
    notifier.stopping()                    # on SIGTERM, before draining calls
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger("streamguard.notify")


class Notifier:
    """Sends sd_notify messages to one socket address (or nowhere)."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None):
        self.address = address or None
        self._watchdog_usec = watchdog_usec

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``.

        The watchdog applies to us only if ``WATCHDOG_PID`` is unset or is our pid (systemd sets
        it so a forked child does not think the parent's watchdog is its own).
        """
        env = os.environ if environ is None else environ
        usec: int | None = None
        raw = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if raw and (not pid or pid.strip() == str(os.getpid())):
            try:
                usec = int(raw)
            except ValueError:
                usec = None
            if usec is not None and usec <= 0:
                usec = None
        return cls(env.get("NOTIFY_SOCKET"), watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, message: str) -> bool:
        """Send one datagram; True if sent. Errors are logged, never raised (best effort)."""
        if self.address is None:
            return False
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        try:
            # Non-blocking: the caller is the event loop, and a datagram socket whose reader
            # lags (its queue holds ~10 datagrams) would otherwise freeze every call.
            with socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            ) as sock:
                sock.connect(addr)
                sock.sendall(message.encode("utf-8"))
        except BlockingIOError:
            log.warning("sd_notify dropped: the service manager is not reading", message=message)
            return False
        except OSError as exc:
            log.warning("sd_notify failed", address=self.address, error=str(exc))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={_one_line(status)}" if status else ""))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (CLOCK_MONOTONIC, as sd_notify(3) asks)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def watchdog_interval(self) -> float | None:
        """Seconds between ``watchdog()`` pings: half of ``WatchdogSec``; None when unset."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000


def _one_line(text: str) -> str:
    # A newline would start a new KEY=VALUE assignment inside the datagram.
    return " ".join(text.split())

"""Errors a user can act on.

Anything raised as a :class:`StreamguardError` is printed by the CLI as one line (no traceback)
and turns into a non-zero exit status. Raise it for bad input, bad configuration and missing
resources; let genuine bugs propagate as ordinary exceptions. :func:`bind_error` words a
socket that cannot bind (the daemon's port, RTP, AudioSocket) as that one line.
"""

import errno


class StreamguardError(Exception):
    """A problem the user can fix; its message is shown as-is, on one line."""


class ConfigError(StreamguardError):
    """The configuration file or environment is invalid."""


class ModelError(StreamguardError):
    """A model spec cannot be resolved, read or trusted."""


class AudioError(StreamguardError):
    """An audio file or stream cannot be decoded."""


def bind_error(what: str, host: str, port: int, exc: OSError) -> StreamguardError:
    """A listener that cannot bind, as the one-line error the CLI prints (not a traceback)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno == errno.EADDRINUSE:
        reason = "address already in use (another streamguard running? pick another port)"
    return StreamguardError(f"cannot listen for {what} on {host}:{port}: {reason}")

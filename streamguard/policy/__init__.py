"""The alert policy: how window scores become alerts and a verdict (smoothing, hysteresis,
verdict, adaptive stride), and the one :func:`replay` of it for recorded scores."""

from streamguard.policy.replay import AlertPolicy, replay

__all__ = ["AlertPolicy", "replay"]

"""Which RTP datagrams the daemon even looks at: sender allow-list, packet rate, SSRC count.

RTP has no handshake to authenticate, and UDP source addresses are trivially spoofed, so the
RTP port is guarded the way SBCs guard theirs: only configured sender networks
(``[sources.rtp] allow``, loopback by default), at most ``max_packets_per_second`` from one
sender (token bucket, one second of burst) and at most ``max_ssrcs_per_sender`` streams from
one sender at once (an SSRC silent for ``ssrc_idle_seconds`` frees its slot). A *sender* is one
transport address, host and port: Asterisk and FreeSWITCH send each call from its own RTP port,
so a legitimate sender has one SSRC at a time (two briefly when it changes SSRC).

Pure and synchronous: :meth:`RtpAdmission.admit` takes the address, the SSRC and ``now``; the
UDP edge (``udp.py``) calls it before the demux sees the datagram. State is bounded
(``max_senders``, least recently seen evicted) so a flood of spoofed senders costs memory of
one table, not more.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from streamguard.ratelimit import TokenBucket

__all__ = ["Admission", "RtpAdmission", "rtp_ssrc"]

_RTCP_TYPES: Final = range(200, 205)  # SR, RR, SDES, BYE, APP (RFC 5761: the second byte)
_MAX_HOSTS: Final = 4096


def rtp_ssrc(datagram: bytes) -> int | None:
    """The SSRC of an RTP packet, or None (too short, not RTP version 2, or RTCP)."""
    if len(datagram) < 12 or datagram[0] >> 6 != 2 or datagram[1] in _RTCP_TYPES:
        return None
    return int.from_bytes(datagram[8:12], "big")


class Admission(NamedTuple):
    """``reason`` None = admitted; else ``not_allowed`` | ``rate`` | ``ssrcs``. ``report`` is
    True the first time this sender is refused for this reason (log one line, not one per
    packet)."""

    reason: str | None
    report: bool = False


_ADMITTED: Final = Admission(None)


@dataclass(slots=True)
class _Sender:
    bucket: TokenBucket
    ssrcs: dict[int, float] = field(default_factory=dict)  # ssrc -> last seen
    reported: set[str] = field(default_factory=set)


class RtpAdmission:
    def __init__(
        self,
        allow: Iterable[str],
        *,
        max_packets_per_second: float = 200.0,
        max_ssrcs_per_sender: int = 4,
        ssrc_idle_seconds: float = 5.0,
        max_senders: int = 4096,
    ) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in allow]
        self.rate = max_packets_per_second
        self.max_ssrcs = max_ssrcs_per_sender
        self.ssrc_idle = ssrc_idle_seconds
        self.max_senders = max_senders
        self._senders: OrderedDict[tuple[str, int], _Sender] = OrderedDict()
        self._allowed: dict[str, bool] = {}  # host -> verdict (bounded cache)
        self._reported_hosts: OrderedDict[str, None] = OrderedDict()  # not_allowed, logged

    def allowed(self, host: str) -> bool:
        verdict = self._allowed.get(host)
        if verdict is None:
            try:
                ip = ipaddress.ip_address(host.split("%", 1)[0])
            except ValueError:
                verdict = False
            else:
                if ip.version == 6 and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
                verdict = any(ip in net for net in self.networks if net.version == ip.version)
            if len(self._allowed) >= _MAX_HOSTS:
                self._allowed.clear()
            self._allowed[host] = verdict
        return verdict

    def admit(self, addr: tuple, ssrc: int | None, now: float) -> Admission:
        """May the datagram from ``addr`` (``(host, port, ...)``) carrying ``ssrc`` go on?"""
        host, port = str(addr[0]), int(addr[1])
        if not self.allowed(host):
            first = host not in self._reported_hosts
            if first:
                self._reported_hosts[host] = None
                if len(self._reported_hosts) > _MAX_HOSTS:
                    self._reported_hosts.popitem(last=False)
            return Admission("not_allowed", first)
        key = (host, port)
        sender = self._senders.get(key)
        if sender is None:
            sender = _Sender(TokenBucket(self.rate, max(1.0, self.rate), now))
            self._senders[key] = sender
            while len(self._senders) > self.max_senders:
                self._senders.popitem(last=False)
        else:
            self._senders.move_to_end(key)
        if not sender.bucket.allow(now):
            return self._refuse(sender, "rate")
        if ssrc is None:  # RTCP or not RTP at all: the rate limit is all that applies
            return _ADMITTED
        if ssrc not in sender.ssrcs:
            for old, seen in list(sender.ssrcs.items()):
                if now - seen > self.ssrc_idle:
                    del sender.ssrcs[old]
            if len(sender.ssrcs) >= self.max_ssrcs:
                return self._refuse(sender, "ssrcs")
        sender.ssrcs[ssrc] = now
        return _ADMITTED

    @staticmethod
    def _refuse(sender: _Sender, reason: str) -> Admission:
        first = reason not in sender.reported
        sender.reported.add(reason)
        return Admission(reason, first)

"""An AudioHook (protocol version 2) client written from Genesys' specification, for the tests.

It plays Genesys Cloud's part: signs the upgrade request (HTTP message signature, HMAC-SHA256
keyed with the base64-decoded client secret, covering the six components the specification
lists), opens the session with a media offer, streams interleaved PCMU audio, pings, pauses and
closes, and checks every server message's ``seq``/``clientseq`` on the way. Deliberately written
apart from streamguard's server code (it does not import it), so the two can disagree.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from streamguard.audio.codecs import encode

#: The sample credentials of the AudioHook specification.
SAMPLE_API_KEY = "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh"
SAMPLE_CLIENT_SECRET = "TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU="
SAMPLE_ORG_ID = "d7934305-0972-4844-938e-9060eef73d05"
SAMPLE_PARTICIPANT = {
    "id": "883efee8-3d6c-4537-b500-6d7ca4b92fa0",
    "ani": "+1-555-555-1234",
    "aniName": "John Doe",
    "dnis": "+1-800-555-6789",
}
STEREO = {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}
EXTERNAL = {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}
INTERNAL = {"type": "audio", "format": "PCMU", "channels": ["internal"], "rate": 8000}
COMPONENTS = (
    "@request-target",
    "@authority",
    "audiohook-organization-id",
    "audiohook-session-id",
    "audiohook-correlation-id",
    "x-api-key",
)


def signed_headers(
    url: str,
    *,
    api_key: str = SAMPLE_API_KEY,
    client_secret: str | None = SAMPLE_CLIENT_SECRET,
    organization_id: str = SAMPLE_ORG_ID,
    session_id: str,
    correlation_id: str | None = None,
    created: int | None = None,
    lifetime: int = 30,
    nonce: str | None = None,
) -> dict[str, str]:
    """The upgrade request's headers as Genesys Cloud sends them (signed if a secret is given)."""
    parts = urlsplit(url)
    headers = {
        "Audiohook-Organization-Id": organization_id,
        "Audiohook-Session-Id": session_id,
        "Audiohook-Correlation-Id": correlation_id or str(uuid.uuid4()),
        "X-API-KEY": api_key,
    }
    if client_secret is None:
        return headers
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    values = {
        "@request-target": target,
        "@authority": parts.netloc,
        **{k.lower(): v for k, v in headers.items()},
    }
    created = int(time.time()) if created is None else created
    nonce = nonce or base64.b64encode(secrets.token_bytes(18)).decode()
    inner = "(" + " ".join(f'"{c}"' for c in COMPONENTS) + ")"
    params = (
        f'{inner};keyid="{api_key}";nonce="{nonce}";alg="hmac-sha256";'
        f"created={created};expires={created + lifetime}"
    )
    lines = [f'"{c}": {values[c]}' for c in COMPONENTS]
    base = "\n".join([*lines, f'"@signature-params": {params}'])
    key = base64.b64decode(client_secret)
    signature = base64.b64encode(hmac.new(key, base.encode(), hashlib.sha256).digest()).decode()
    headers["Signature-Input"] = f"sig1={params}"
    headers["Signature"] = f"sig1=:{signature}:"
    return headers


def pcmu_frames(channels: np.ndarray, frame_ms: int = 200) -> list[bytes]:
    """float32 [channels, n] at 8 kHz -> interleaved mu-law frames of ``frame_ms``."""
    step = 8 * frame_ms
    interleaved = np.ascontiguousarray(channels.T).reshape(-1)
    width = channels.shape[0]
    return [
        encode("mulaw", interleaved[i : i + step * width])
        for i in range(0, len(interleaved), step * width)
    ]


class ProtocolError(AssertionError):
    """The server broke the protocol (as this client reads the specification)."""


class AudioHookClient:
    """One AudioHook session over a real WebSocket (``async with``)."""

    def __init__(self, url: str, headers: dict[str, str], session_id: str) -> None:
        self.url = url
        self.headers = headers
        self.session_id = session_id
        self.seq = 0  # last seq we sent
        self.serverseq = 0  # last server seq we saw
        self.samples = 0  # position: samples sent + discarded (8 kHz)
        self.received: list[dict[str, Any]] = []
        self.ws: ClientConnection | None = None
        self._inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._reader: asyncio.Task | None = None

    async def __aenter__(self) -> AudioHookClient:
        self.ws = await connect(self.url, additional_headers=self.headers, compression=None)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.ws is not None
        await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    @property
    def position(self) -> str:
        return f"PT{self.samples / 8000:g}S"

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                if not isinstance(raw, str):
                    raise ProtocolError("the server sent a binary frame")
                msg = json.loads(raw)
                if msg.get("version") != "2" or msg.get("id") != self.session_id:
                    raise ProtocolError(f"bad server message {msg}")
                if msg["seq"] != self.serverseq + 1:
                    raise ProtocolError(f"server seq {msg['seq']} after {self.serverseq}")
                if msg["clientseq"] > self.seq:
                    raise ProtocolError(f"clientseq {msg['clientseq']} ahead of us ({self.seq})")
                self.serverseq = msg["seq"]
                self.received.append(msg)
                await self._inbox.put(msg)
        except ConnectionClosed:
            pass
        finally:
            await self._inbox.put(None)

    async def send(self, kind: str, parameters: dict[str, Any] | None = None) -> int:
        assert self.ws is not None
        self.seq += 1
        message = {
            "version": "2",
            "id": self.session_id,
            "type": kind,
            "seq": self.seq,
            "serverseq": self.serverseq,
            "position": self.position,
            "parameters": parameters or {},
        }
        await self.ws.send(json.dumps(message))
        return self.seq

    async def expect(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next server message, which must be of type ``kind``."""
        msg = await asyncio.wait_for(self._inbox.get(), timeout)
        if msg is None:
            raise ProtocolError(f"connection closed while waiting for {kind!r}")
        if msg["type"] != kind:
            raise ProtocolError(f"expected {kind!r}, got {msg}")
        return msg

    async def open(
        self,
        conversation_id: str,
        *,
        media: list[dict[str, Any]] | None = None,
        organization_id: str = SAMPLE_ORG_ID,
        participant: dict[str, str] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        await self.send(
            "open",
            {
                "organizationId": organization_id,
                "conversationId": conversation_id,
                "participant": participant or SAMPLE_PARTICIPANT,
                "media": media or [STEREO, EXTERNAL, INTERNAL],
                "language": "en-US",
                **extra,
            },
        )
        return await self.expect("opened")

    async def send_audio(self, frame: bytes, channels: int) -> None:
        assert self.ws is not None
        await self.ws.send(frame)
        self.samples += len(frame) // channels

    async def ping(self) -> dict[str, Any]:
        seq = await self.send("ping")
        pong = await self.expect("pong")
        if pong["clientseq"] != seq:
            raise ProtocolError("pong's clientseq is not the ping's seq")
        return pong

    async def close(self, reason: str = "end") -> dict[str, Any]:
        await self.send("close", {"reason": reason})
        return await self.expect("closed")

    async def closed_by_server(self, timeout: float = 10.0) -> tuple[int | None, str | None]:
        assert self.ws is not None
        await asyncio.wait_for(self.ws.wait_closed(), timeout)
        return self.ws.close_code, self.ws.close_reason

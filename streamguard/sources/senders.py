"""The client side of each WebSocket feed protocol: audio -> the frames a provider would send.

Pure generators (no sockets): ``streamguard feed``, the demo, the benchmarks and the
integration tests all speak to the daemon through these, so the daemon is always driven by the
exact wire format its parsers accept. Each generator yields ``(send_at, frame)`` where
``send_at`` is the call time in seconds at which a real-time sender would put the frame on the
wire, and ``frame`` is ``str`` (a text frame) or ``bytes`` (a binary frame).

Audio comes in as float32 ``[channels, n]`` at ``sample_rate``; each generator resamples or
encodes as its protocol demands (Twilio: 8 kHz mu-law; native: the declared encoding; L16
forks and ACS: little-endian 16-bit PCM).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from streamguard.audio.codecs import encode
from streamguard.audio.resample import StreamResampler

Frame = str | bytes
PROTOCOLS = ("twilio", "native", "l16")
TWILIO_TRACKS = ("inbound", "outbound")


def _resample(channels: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return channels
    out = []
    for channel in channels:
        stream = StreamResampler(rate, target)
        out.append(np.concatenate([stream.push(channel), stream.flush()]))
    n = min(len(c) for c in out)
    return np.stack([c[:n] for c in out])


def twilio_frames(
    channels: np.ndarray,
    sample_rate: int,
    *,
    call_sid: str | None = None,
    chunk_ms: int = 20,
    custom_parameters: dict[str, str] | None = None,
) -> Iterator[tuple[float, Frame]]:
    """Twilio Media Streams: channel 0 is ``inbound``, channel 1 (if any) ``outbound``."""
    if channels.shape[0] > 2:
        raise ValueError("a Twilio stream carries at most two tracks (inbound, outbound)")
    call_sid = call_sid or "CA" + uuid.uuid4().hex
    stream_sid = "MZ" + uuid.uuid4().hex
    account_sid = "AC" + uuid.uuid4().hex
    audio = _resample(channels, sample_rate, 8000)
    tracks = TWILIO_TRACKS[: audio.shape[0]]
    seq = 0

    def message(event: str, **body: Any) -> str:
        nonlocal seq
        seq += 1
        return json.dumps(
            {"event": event, "sequenceNumber": str(seq), **body, "streamSid": stream_sid}
        )

    yield 0.0, json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    yield (
        0.0,
        message(
            "start",
            start={
                "accountSid": account_sid,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": list(tracks),
                "customParameters": custom_parameters or {},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        ),
    )
    step = 8 * chunk_ms
    for chunk, offset in enumerate(range(0, audio.shape[1], step), start=1):
        for name, channel in zip(tracks, audio, strict=True):
            payload = base64.b64encode(encode("mulaw", channel[offset : offset + step]))
            media = {
                "track": name,
                "chunk": str(chunk),
                "timestamp": str(offset // 8),
                "payload": payload.decode("ascii"),
            }
            yield offset / 8000, message("media", media=media)
    yield (
        audio.shape[1] / 8000,
        message("stop", stop={"accountSid": account_sid, "callSid": call_sid}),
    )


def native_frames(
    channels: np.ndarray,
    sample_rate: int,
    *,
    call_id: str | None = None,
    encoding: str = "pcm_s16le",
    chunk_ms: int = 20,
    tracks: list[str] | None = None,
) -> Iterator[tuple[float, Frame]]:
    """streamguard's native protocol: metadata text frame, interleaved binary audio, stop."""
    meta: dict[str, Any] = {
        "call_id": call_id or uuid.uuid4().hex,
        "sample_rate": int(sample_rate),
        "encoding": encoding,
        "channels": int(channels.shape[0]),
    }
    if tracks:
        meta["tracks"] = tracks
    yield 0.0, json.dumps(meta)
    yield from _binary(channels, sample_rate, encoding, chunk_ms)
    yield channels.shape[1] / sample_rate, json.dumps({"event": "stop"})


def l16_frames(
    channels: np.ndarray,
    sample_rate: int,
    *,
    call_id: str | None = None,
    chunk_ms: int = 20,
) -> Iterator[tuple[float, Frame]]:
    """An L16 fork: Vonage's first frame for mono, FreeSWITCH mod_audio_fork's for stereo."""
    if channels.shape[0] == 1:
        first: dict[str, Any] = {
            "event": "websocket:connected",
            "content-type": f"audio/l16;rate={int(sample_rate)}",
        }
        if call_id:
            first["conversation_uuid"] = call_id
    elif channels.shape[0] == 2:
        first = {"sampleRate": int(sample_rate), "mixType": "stereo"}
        if call_id:
            first["uuid"] = call_id
    else:
        raise ValueError("an L16 fork carries one (mixed) or two (stereo) channels")
    yield 0.0, json.dumps(first)
    yield from _binary(channels, sample_rate, "pcm_s16le", chunk_ms)
    yield channels.shape[1] / sample_rate, json.dumps({"event": "stop"})


def acs_frames(
    channels: np.ndarray,
    sample_rate: int,
    *,
    subscription_id: str | None = None,
    participants: list[str] | None = None,
    chunk_ms: int = 20,
    start: datetime | None = None,
) -> Iterator[tuple[float, Frame]]:
    """Azure Communication Services media streaming (the JSON of Microsoft's audio-streaming
    quickstart and the Call Automation SDKs' models): ``AudioMetadata``, then ``AudioData``
    every ``chunk_ms``, base64 16-bit little-endian PCM at 16 or 24 kHz. With ``participants``
    (one raw ID per channel) the audio is unmixed, one frame per participant per step; without,
    one mono channel is the mixed stream. An all-zero chunk is sent ``silent``. ACS sends no
    stop message: the sender ends the call by closing the WebSocket."""
    if participants is None and channels.shape[0] != 1:
        raise ValueError("mixed ACS audio is one channel: name the participants to unmix")
    if participants is not None and len(participants) != channels.shape[0]:
        raise ValueError("one participant raw ID per channel")
    start = start or datetime.now(UTC)
    step = max(1, sample_rate * chunk_ms // 1000)
    meta = {
        "subscriptionId": subscription_id or str(uuid.uuid4()),
        "encoding": "PCM",
        "sampleRate": int(sample_rate),
        "channels": 1,
        "length": step * 2,
    }
    yield 0.0, json.dumps({"kind": "AudioMetadata", "audioMetadata": meta})
    names: list[str | None] = list(participants) if participants else [None]
    for offset in range(0, channels.shape[1], step):
        at = offset / sample_rate
        stamp = (start + timedelta(seconds=at)).isoformat(timespec="milliseconds")
        for name, channel in zip(names, channels, strict=True):
            pcm = encode("pcm_s16le", channel[offset : offset + step])
            frame: dict[str, Any] = {
                "timestamp": stamp.replace("+00:00", "Z"),
                "data": base64.b64encode(pcm).decode("ascii"),
                "silent": not any(pcm),
            }
            if name is not None:
                frame["participantRawID"] = name
            yield at, json.dumps({"kind": "AudioData", "audioData": frame})


def _binary(
    channels: np.ndarray, sample_rate: int, encoding: str, chunk_ms: int
) -> Iterator[tuple[float, bytes]]:
    step = max(1, sample_rate * chunk_ms // 1000)
    interleaved = np.ascontiguousarray(channels.T)  # (frames, channels)
    for offset in range(0, interleaved.shape[0], step):
        block = interleaved[offset : offset + step].reshape(-1)
        yield offset / sample_rate, encode(encoding, block)


def frames_for(
    protocol: str,
    channels: np.ndarray,
    sample_rate: int,
    *,
    call_id: str | None = None,
    chunk_ms: int = 20,
) -> Iterator[tuple[float, Frame]]:
    """Dispatch on ``protocol`` (``twilio`` | ``native`` | ``l16``); ``chunk_ms`` per frame."""
    if protocol == "twilio":
        return twilio_frames(channels, sample_rate, call_sid=call_id, chunk_ms=chunk_ms)
    if protocol == "native":
        return native_frames(channels, sample_rate, call_id=call_id, chunk_ms=chunk_ms)
    if protocol == "l16":
        return l16_frames(channels, sample_rate, call_id=call_id, chunk_ms=chunk_ms)
    raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")

"""``streamguard feed``: stream an audio file into a daemon as if it were a live call."""

from __future__ import annotations

import argparse
import math
import sys

HELP = "stream an audio file into a running daemon as a call (twilio, native or l16 protocol)"

DEFAULT_PATHS = {"twilio": "/twilio", "native": "/ingest", "l16": "/ingest"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="audio file (wav/flac/ogg/mp3, any rate; stereo = 2 tracks)")
    parser.add_argument(
        "--url",
        default="ws://127.0.0.1:8765",
        help="daemon URL; the protocol's default path (/twilio or /ingest) is added when the "
        "URL has none (default: %(default)s)",
    )
    parser.add_argument(
        "--protocol",
        choices=("twilio", "native", "l16"),
        default="twilio",
        help="wire protocol: twilio = Media Streams (8 kHz mu-law, inbound/outbound tracks), "
        "native = streamguard's PCM protocol, l16 = a Vonage/FreeSWITCH-style L16 fork "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="pace frames at the speed of the audio (default: as fast as the daemon reads)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="with --realtime: playback speed factor (default: %(default)s)",
    )
    parser.add_argument("--call-id", help="call id to use (default: a random one)")
    parser.add_argument(
        "--token",
        help="bearer token, when the daemon sets [auth] ingest_token or token (default: "
        "$STREAMGUARD_AUTH__INGEST_TOKEN, else $STREAMGUARD_AUTH__TOKEN)",
    )


def with_path(url: str, protocol: str) -> str:
    """``url`` with the protocol's default feed path when it has none; StreamguardError for a
    URL that is not ws(s):// or that points at the subscriber endpoint (a feed would hang there).
    """
    from streamguard.client import ALERTS_PATH, split_ws_url
    from streamguard.errors import StreamguardError

    parts = split_ws_url(url)
    if parts.path in ("", "/"):
        return url.rstrip("/") + DEFAULT_PATHS[protocol]
    if parts.path.rstrip("/") == ALERTS_PATH:
        raise StreamguardError(
            f"{url} is the alerts (subscriber) endpoint; feeds go to /twilio or /ingest "
            "(or give the daemon URL without a path)"
        )
    return url


def run(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from streamguard.audio.file import read_audio
    from streamguard.client import send_frames
    from streamguard.sources.senders import frames_for

    if not math.isfinite(args.speed) or args.speed <= 0:
        print("streamguard: error: --speed must be a number > 0", file=sys.stderr)
        return 2
    url = with_path(args.url, args.protocol)  # bad URLs fail before the file is decoded
    rate, channels = read_audio(args.file)
    try:
        frames = list(frames_for(args.protocol, channels, rate, call_id=args.call_id))
    except ValueError as exc:
        print(f"streamguard: error: {args.file}: {exc}", file=sys.stderr)
        return 2
    token = (
        args.token
        or os.environ.get("STREAMGUARD_AUTH__INGEST_TOKEN")
        or os.environ.get("STREAMGUARD_AUTH__TOKEN")
    )
    result = asyncio.run(
        send_frames(url, frames, realtime=args.realtime, speed=args.speed, token=token)
    )
    closed = f"{result.close_code} {result.close_reason}".rstrip()
    if result.ended_normally:
        print(
            f"sent {result.frames} frames ({channels.shape[1] / rate:.2f} s of audio, "
            f"{channels.shape[0]} track(s)) in {result.wall_seconds:.2f} s; "
            f"daemon closed with {closed}"
        )
        return 0
    # What went out before the close, never the whole file: the daemon did not take the rest.
    print(
        f"streamguard: error: the daemon closed the call early ({closed}) after "
        f"{result.frames} of {len(frames)} frames ({result.audio_seconds:.2f} of "
        f"{channels.shape[1] / rate:.2f} s of audio)",
        file=sys.stderr,
    )
    return 1

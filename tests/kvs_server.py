"""A local stand-in for Kinesis Video Streams on 127.0.0.1: NOT AWS.

It answers the two calls streamguard's reader makes, with the request and response shapes of
the KVS API (botocore's service models ``kinesisvideo`` and ``kinesis-video-media``,
2017-09-30, rest-json):

* ``POST /getDataEndpoint`` ``{"StreamARN", "APIName": "GET_MEDIA"}`` ->
  ``{"DataEndpoint": "http://127.0.0.1:PORT"}`` (itself);
* ``POST /getMedia`` ``{"StreamARN", "StartSelector": {"StartSelectorType", ...}}`` -> 200,
  ``Content-Type: video/webm``, a chunked body of Matroska fragments;
* errors as KVS sends them: the status, ``x-amzn-ErrorType`` and a JSON ``message``.

The fragments are a fixture file's (each starts with an EBML header; its number is its
``AWS_KINESISVIDEO_FRAGMENT_NUMBER`` tag). Faults on demand: ``drop_after`` bytes (the first
GetMedia response breaks off there, without the chunked terminator: a dropped connection),
``pace`` seconds between fragments, ``hold_open`` seconds before a response ends. It records
every request (path, selector, time, whether it was SigV4-signed). It does not check
signatures: boto3 signs with whatever the default chain gives it.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FRAGMENT_TAG = re.compile(rb"AWS_KINESISVIDEO_FRAGMENT_NUMBER.{2,4}?(\d{10,60})", re.S)


def split_fragments(data: bytes) -> list[tuple[str, bytes]]:
    """(fragment number, bytes) per fragment of a GetMedia-shaped file."""
    marker = b"\x1a\x45\xdf\xa3"
    starts = [m.start() for m in re.finditer(re.escape(marker), data)]
    out = []
    for i, start in enumerate(starts):
        chunk = data[start : starts[i + 1] if i + 1 < len(starts) else len(data)]
        number = FRAGMENT_TAG.search(chunk)
        assert number, "fragment without AWS_KINESISVIDEO_FRAGMENT_NUMBER"
        out.append((number.group(1).decode(), chunk))
    return out


class KvsTestServer:
    def __init__(
        self,
        fixture: Path,
        *,
        stream_arn: str,
        drop_after: int | None = None,
        pace: float = 0.0,
        hold_open: float = 0.0,
        inclusive: bool = False,
        chunk: int = 4096,
    ) -> None:
        self.fragments = split_fragments(fixture.read_bytes())
        self.stream_arn = stream_arn
        self.drop_after = drop_after
        self.pace = pace
        self.hold_open = hold_open
        self.inclusive = inclusive  # FRAGMENT_NUMBER: include the named fragment, or start after
        self.chunk = chunk
        self.requests: list[dict] = []
        self.drops = 0
        self.fragments_started = 0  # fragments begun (before their first byte), all responses
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                signed = self.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256 ")
                server.requests.append(
                    {"path": self.path, "body": body, "at": time.monotonic(), "signed": signed}
                )
                if body.get("StreamARN") != server.stream_arn:
                    return self.error(404, "ResourceNotFoundException", "stream not found")
                if self.path == "/getDataEndpoint":
                    if body.get("APIName") != "GET_MEDIA":
                        return self.error(400, "InvalidArgumentException", "APIName")
                    port = server.server.server_address[1]
                    return self.json(200, {"DataEndpoint": f"http://127.0.0.1:{port}"})
                if self.path == "/getMedia":
                    return self.get_media(body.get("StartSelector") or {})
                return self.error(404, "UnknownOperationException", self.path)

            def json(self, status, payload):
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def error(self, status, kind, message):
                raw = json.dumps({"message": message}).encode()
                self.send_response(status)
                self.send_header("x-amzn-ErrorType", kind)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def get_media(self, selector):
                kind = selector.get("StartSelectorType")
                numbers = [n for n, _ in server.fragments]
                if kind == "FRAGMENT_NUMBER":
                    after = selector.get("AfterFragmentNumber")
                    if after not in numbers:
                        return self.error(400, "InvalidArgumentException", "fragment not found")
                    first = numbers.index(after) + (0 if server.inclusive else 1)
                elif kind in ("EARLIEST", "PRODUCER_TIMESTAMP", "SERVER_TIMESTAMP"):
                    first = 0
                elif kind == "NOW":
                    first = len(numbers) - 1
                else:
                    return self.error(400, "InvalidArgumentException", f"selector {kind}")
                self.send_response(200)
                self.send_header("Content-Type", "video/webm")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                sent = 0
                drop = server.drop_after if server.drops == 0 else None
                for _, data in server.fragments[first:]:
                    server.fragments_started += 1
                    for i in range(0, len(data), server.chunk):
                        piece = data[i : i + server.chunk]
                        if drop is not None and sent + len(piece) > drop:
                            piece = piece[: drop - sent]
                            self.wfile.write(f"{len(piece) + 100:x}\r\n".encode() + piece)
                            self.wfile.flush()
                            server.drops += 1
                            self.connection.shutdown(socket.SHUT_RDWR)  # mid-chunk: broken
                            self.close_connection = True
                            return
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                        sent += len(piece)
                    self.wfile.flush()
                    time.sleep(server.pace)
                time.sleep(server.hold_open)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def get_media_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"] == "/getMedia"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

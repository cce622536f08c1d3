"""Webhooks against a real HTTP receiver on loopback that fails its first attempts and checks
every signature; cursors persisted in a real SQLite log; the ``webhook verify`` command."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from streamguard.alerts.backends import SqliteBackend
from streamguard.alerts.bus import AlertBus
from streamguard.alerts.events import Alert, CallEnded, Score, combine_summaries
from streamguard.audio.file import read_audio
from streamguard.cli import main as cli_main
from streamguard.config import EventsSettings, WebhookSettings
from streamguard.metrics import Metrics
from streamguard.webhooks.delivery import WebhookDeliverer
from streamguard.webhooks.signing import SignatureError, verify

from .conftest import Subscriber, until

pytestmark = pytest.mark.integration
SECRET = "whsec-test-0123456789"


class Receiver:
    """A real HTTP server: answers 500 to the first ``fail_first`` requests (and always to
    the seqs in ``always_fail``), verifies signatures, records what it accepted."""

    def __init__(self, *, fail_first=0, always_fail=()):
        self.fail_first = fail_first
        self.always_fail = set(always_fail)
        self.requests: list[dict] = []
        self.accepted: list[dict] = []
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    verify(SECRET, body, self.headers["Streamguard-Signature"], now=time.time())
                except SignatureError:
                    receiver.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                event = json.loads(body)
                key = self.headers["Idempotency-Key"]
                receiver.requests.append({"key": key, "event": event})
                fail = len(receiver.requests) <= receiver.fail_first
                if fail or event["seq"] in receiver.always_fail:
                    self.send_response(500)
                else:
                    receiver.accepted.append({"key": key, "event": event, "body": body})
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/sg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def endpoint(url, **kw):
    base = dict(url=url, secret=SECRET, backoff_seconds=0.02, max_backoff_seconds=0.1)
    return WebhookSettings(**{**base, **kw})


def score(bus, i, call="A"):
    bus.publish(
        Score(call_id=call, track="0", source="native", start=i, end=i + 4, p_fake=0.9,
              smoothed=0.8)
    )  # fmt: skip


def alert(bus, call="A"):
    bus.publish(
        Alert(call_id=call, track="0", source="native", state="raised", smoothed=0.8,
              threshold=0.5, start=0, end=5)
    )  # fmt: skip


def ended(bus, call="A"):
    bus.publish(
        CallEnded(call_id=call, track=None, source="native", summary=combine_summaries({}),
                  reason="stop")
    )  # fmt: skip


class Node:
    def __init__(self, tmp_path):
        self.metrics = Metrics()
        self.bus = AlertBus("tiny", metrics=self.metrics)
        self.backend = SqliteBackend(
            EventsSettings(path=str(tmp_path / "events.db")), metrics=self.metrics
        )

    async def __aenter__(self):
        await self.backend.start(self.bus)
        return self

    async def __aexit__(self, *exc):
        await self.backend.close()

    def start_webhook(self, ep):
        deliverer = WebhookDeliverer(ep, self.bus, self.backend, metrics=self.metrics)
        return deliverer, asyncio.create_task(deliverer.run())


async def stop(task):
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_retries_until_accepted_signed_in_order_with_seq_as_idempotency_key(tmp_path):
    receiver = Receiver(fail_first=3)
    try:
        async with Node(tmp_path) as node:
            deliverer, task = node.start_webhook(
                endpoint(receiver.url, types=["alert", "call_ended"])
            )
            await until(lambda: deliverer.cursor is not None)
            score(node.bus, 0)
            alert(node.bus)
            score(node.bus, 1)
            ended(node.bus)
            await until(lambda: len(receiver.accepted) == 2)
            await stop(task)
            retries = node.metrics.registry.get_sample_value(
                "streamguard_webhook_deliveries_total",
                {"endpoint": deliverer.label, "outcome": "retry"},
            )
    finally:
        receiver.close()
    assert receiver.bad_signatures == 0
    assert [a["event"]["type"] for a in receiver.accepted] == ["alert", "call_ended"]
    assert [a["key"] for a in receiver.accepted] == ["2", "4"]
    # the first three attempts (all of the alert, seq 2) failed, with the same key each time
    assert [r["key"] for r in receiver.requests[:4]] == ["2", "2", "2", "2"]
    assert retries == 3
    # the body is the event exactly as /alerts sends it (the log's stored JSON)
    assert receiver.accepted[0]["body"].decode() == json.dumps(
        receiver.accepted[0]["event"], separators=(",", ":")
    )


async def test_dead_letter_after_max_attempts_then_moves_on(tmp_path):
    receiver = Receiver(always_fail={2})
    try:
        async with Node(tmp_path) as node:
            deliverer, task = node.start_webhook(endpoint(receiver.url, max_attempts=3))
            await until(lambda: deliverer.cursor is not None)
            for i in range(3):
                score(node.bus, i)
            await until(lambda: len(receiver.accepted) == 2)
            await stop(task)
            dead = node.metrics.registry.get_sample_value(
                "streamguard_webhook_dead_letters_total", {"endpoint": deliverer.label}
            )
            letters = node.backend._writers.get().dead_letters()
    finally:
        receiver.close()
    assert [a["event"]["seq"] for a in receiver.accepted] == [1, 3]
    assert sum(r["event"]["seq"] == 2 for r in receiver.requests) == 3
    assert dead == 1
    assert letters == [(deliverer.label, 2, 3, "HTTP 500")]


async def test_cursor_survives_a_restart_nothing_skipped(tmp_path):
    receiver = Receiver()
    try:
        async with Node(tmp_path) as node:
            deliverer, task = node.start_webhook(endpoint(receiver.url))
            await until(lambda: deliverer.cursor is not None)
            for i in range(5):
                score(node.bus, i)
            await until(lambda: deliverer.cursor == 5)  # seq 5 answered, cursor moved
            await stop(task)  # the endpoint's deliverer is down...
            for i in range(5, 12):  # ...while events keep coming
                score(node.bus, i)
            await node.backend.flush()
        async with Node(tmp_path) as node:  # a restarted daemon, same log
            deliverer, task = node.start_webhook(endpoint(receiver.url))
            score(node.bus, 12)
            await until(lambda: len(receiver.accepted) >= 13)
            await stop(task)
    finally:
        receiver.close()
    seqs = [a["event"]["seq"] for a in receiver.accepted]
    assert seqs == list(range(1, 14))


def test_webhook_verify_command(tmp_path, capsys):
    from streamguard.webhooks.signing import sign

    body = tmp_path / "body.json"
    body.write_bytes(b'{"type":"alert","seq":7}')
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    header = sign(SECRET, body.read_bytes(), int(time.time()))
    args = ["webhook", "verify", "--secret-file", str(secret), "--body", str(body)]
    printed = []  # everything the command wrote, to check the secret is in none of it

    def output():
        out = capsys.readouterr()
        printed.append(out.out + out.err)
        return out

    assert cli_main([*args, "--header", header]) == 0
    assert "valid" in output().out
    assert cli_main([*args, "--header", header.replace("v1=", "v1=0")[:-1]]) == 1
    assert "does not match" in output().err
    stale = sign(SECRET, body.read_bytes(), int(time.time()) - 3600)
    assert cli_main([*args, "--header", stale]) == 1
    assert "tolerance" in output().err
    assert all(text and SECRET not in text for text in printed)


@pytest.mark.slow
async def test_a_daemons_webhooks_deliver_signed_and_its_logs_hold_no_secret(
    tmp_path, tiny_model_dir, fixtures_dir
):
    """``[[webhooks]]`` in a real ``serve``'s config: a real receiver gets the signed
    ``call_ended`` (after refusing the first attempt), and the daemon's whole log output, at
    debug level (every handshake, request line and retry logged), holds neither the webhook
    secret nor the bearer token: logs.redact_secrets masks what would have shown them."""
    import signal

    from streamguard.client import send_frames
    from streamguard.sources.senders import native_frames

    from .test_serve_process import ServeProcess

    token = "tok-0123456789abcdef"
    receiver = Receiver(fail_first=1)
    config = tmp_path / "streamguard.toml"
    config.write_text(
        f'[auth]\ntoken = "{token}"\n\n[logging]\nlevel = "debug"\n\n'
        f'[events]\npath = "{tmp_path / "events.db"}"\n\n'
        f'[[webhooks]]\nurl = "{receiver.url}"\nsecret = "{SECRET}"\n'
        'types = ["call_ended"]\nbackoff_seconds = 0.05\nmax_backoff_seconds = 0.1\n'
    )
    serve = ServeProcess(tmp_path, tiny_model_dir, config)
    try:
        port = await asyncio.to_thread(serve.wait_port)
        rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
        frames = native_frames(mono[:, : 5 * rate], rate, call_id="hooked")
        base = f"ws://127.0.0.1:{port}"
        # a token in the URL (as browsers must send it) and in a header: both in debug lines
        async with Subscriber(f"{base}/alerts?token={token}"):
            result = await send_frames(f"{base}/ingest", frames, token=token)
            await until(lambda: receiver.accepted, timeout=60)
        serve.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(serve.proc.wait, 60) == 0
    finally:
        serve.close()
        receiver.close()
    assert result.close_code == 1000
    (delivered,) = receiver.accepted
    assert delivered["event"]["type"] == "call_ended"
    assert delivered["event"]["call_id"] == "hooked"
    assert len(receiver.requests) == 2 and receiver.bad_signatures == 0  # one retry, signed
    text = "".join(serve.lines)
    events = [record.get("event") for record in serve.logs]
    assert "webhook_retry" in events and "ready" in events  # the log was captured
    assert SECRET not in text and token not in text
    assert "[redacted]" in text  # lines that carried the token were logged, masked


# --------------------------------------------------------------------------- Standard Webhooks
SW_SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
SW_OLD_SECRET = "whsec_" + base64.b64encode(b"an older secret, 32 bytes long!!").decode()


class StandardReceiver:
    """A real HTTP receiver that verifies every request with the Standard Webhooks reference
    library (``standardwebhooks``) and, when given a public key, each ``v1a`` signature with
    a standard Ed25519 verify; answers 500 to its first ``fail_first`` requests."""

    def __init__(self, secret, *, public_key=None, fail_first=0):
        from standardwebhooks import Webhook

        self.webhook = Webhook(secret)
        self.public_key = public_key
        self.fail_first = fail_first
        self.requests: list[dict] = []
        self.failures: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    event = receiver.webhook.verify(body, headers)
                    if receiver.public_key is not None:
                        receiver.verify_v1a(body, headers)
                except Exception as exc:  # recorded: the test fails on any
                    receiver.failures.append(f"{type(exc).__name__}: {exc}")
                    self.send_response(401)
                    self.end_headers()
                    return
                receiver.requests.append({"headers": headers, "event": event})
                self.send_response(500 if len(receiver.requests) <= receiver.fail_first else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sw"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def verify_v1a(self, body: bytes, headers: dict) -> None:
        content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
        v1a = [s[4:] for s in headers["webhook-signature"].split(" ") if s.startswith("v1a,")]
        assert len(v1a) == 1, headers["webhook-signature"]
        self.public_key.verify(base64.b64decode(v1a[0]), content)  # raises if it does not hold

    def close(self):
        self.server.shutdown()
        self.server.server_close()


async def test_standard_webhooks_verified_by_the_reference_library_same_id_on_retry(tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    key = Ed25519PrivateKey.generate()
    key_file = tmp_path / "signing.pem"  # what `openssl genpkey -algorithm ed25519` writes
    key_file.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    receiver = StandardReceiver(SW_SECRET, public_key=key.public_key(), fail_first=1)
    try:
        async with Node(tmp_path) as node:
            ep = endpoint(
                receiver.url,
                scheme="standard-webhooks",
                secret=SW_SECRET,
                signing_key_file=str(key_file),
                types=["alert", "call_ended"],
            )
            deliverer, task = node.start_webhook(ep)
            await until(lambda: deliverer.cursor is not None)
            score(node.bus, 0)
            alert(node.bus)
            ended(node.bus)
            await until(lambda: len(receiver.requests) == 3)
            await stop(task)
    finally:
        receiver.close()
    assert receiver.failures == []
    first, retry, last = receiver.requests
    # the receiver failed the first attempt: the retry carries the same webhook-id
    assert first["event"]["type"] == retry["event"]["type"] == "alert"
    assert first["headers"]["webhook-id"] == retry["headers"]["webhook-id"]
    assert last["headers"]["webhook-id"] != first["headers"]["webhook-id"]
    for r in receiver.requests:
        assert "." not in r["headers"]["webhook-id"]
        assert r["headers"]["streamguard-event"] == r["event"]["type"]
        assert "streamguard-signature" not in r["headers"]
        versions = [s.split(",")[0] for s in r["headers"]["webhook-signature"].split(" ")]
        assert versions == ["v1", "v1a"]


async def test_standard_webhooks_rotation_old_and_new_secret_both_verify(tmp_path):
    """During a rotation both signatures are sent: a receiver still on the old secret and one
    already on the new secret both accept every request (and a third secret does not)."""
    from standardwebhooks import Webhook

    old_receiver = StandardReceiver(SW_OLD_SECRET)
    try:
        async with Node(tmp_path) as node:
            ep = endpoint(
                old_receiver.url,
                scheme="standard-webhooks",
                secret=SW_SECRET,
                previous_secrets=[SW_OLD_SECRET],
            )
            deliverer, task = node.start_webhook(ep)
            await until(lambda: deliverer.cursor is not None)
            score(node.bus, 0)
            await until(lambda: len(old_receiver.requests) == 1)
            await stop(task)
    finally:
        old_receiver.close()
    assert old_receiver.failures == []
    (request,) = old_receiver.requests
    headers = request["headers"]
    assert len(headers["webhook-signature"].split(" ")) == 2
    body = json.dumps(request["event"], separators=(",", ":")).encode()
    assert Webhook(SW_SECRET).verify(body, headers) == request["event"]
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(other).verify(body, headers)

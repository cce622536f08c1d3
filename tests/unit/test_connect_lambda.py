"""The Amazon Connect Lambda (deploy/aws/connect_lambda/handler.py) against real local HTTP
receivers: the daemon's POST /api/kvs/streams, and Secrets Manager's GetSecretValue shape for
the token (a stand-in on 127.0.0.1 reached by boto3 through AWS_ENDPOINT_URL_SECRETS_MANAGER,
not AWS). The event is AWS's documented contact-flow example plus MediaStreams."""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

HANDLER = Path(__file__).resolve().parents[2] / "deploy" / "aws" / "connect_lambda" / "handler.py"
TOKEN = "ingest-token-for-the-lambda-test"
ARN = "arn:aws:kinesisvideo:eu-west-2:111111111111:stream/sg-connect-acme-contact-4a573372/1"

# docs.aws.amazon.com/lambda/latest/dg/services-connect.html, "Example Amazon Connect request
# event", with the MediaStreams attributes a Start media streaming block adds
# (docs.aws.amazon.com/connect/latest/adminguide/media-streaming-attributes.html)
EVENT = {
    "Details": {
        "ContactData": {
            "Attributes": {},
            "Channel": "VOICE",
            "ContactId": "4a573372-1f28-4e26-b97b-XXXXXXXXXXX",
            "CustomerEndpoint": {"Address": "+1234567890", "Type": "TELEPHONE_NUMBER"},
            "InitialContactId": "4a573372-1f28-4e26-b97b-XXXXXXXXXXX",
            "InitiationMethod": "INBOUND",
            "InstanceARN": "arn:aws:connect:eu-west-2:1234567890:instance/c8c0e68d-2200-4265",
            "PreviousContactId": "4a573372-1f28-4e26-b97b-XXXXXXXXXXX",
            "Queue": {
                "ARN": "arn:aws:connect:eu-west-2:111111111111:instance/cccc/queue/aaaa",
                "Name": "PasswordReset",
            },
            "SystemEndpoint": {"Address": "+1234567890", "Type": "TELEPHONE_NUMBER"},
            "MediaStreams": {
                "Customer": {
                    "Audio": {
                        "StreamARN": ARN,
                        "StartTimestamp": "1571360125131",
                        "StopTimestamp": None,
                        "StartFragmentNumber": "91343852333181432392682062622220590765191907586",
                    }
                }
            },
        },
        "Parameters": {"sentAttributeKey": "sentAttributeValue"},
    },
    "Name": "ContactFlowEvent",
}


class Receiver:
    """A real HTTP server answering ``statuses`` in turn; records what it got."""

    def __init__(self, statuses=(202,)):
        self.statuses = list(statuses)
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": raw}
                )
                if self.headers.get("X-Amz-Target") == "secretsmanager.GetSecretValue":
                    answer = json.dumps({"ARN": json.loads(raw)["SecretId"], "Name": "sg",
                                         "SecretString": TOKEN + "\n"}).encode()  # fmt: skip
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-amz-json-1.1")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                status = receiver.statuses.pop(0) if receiver.statuses else 500
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def lambda_module(monkeypatch):
    for name in ("STREAMGUARD_TOKEN_SECRET_ARN", "STREAMGUARD_INGEST_TOKEN", "STREAMGUARD_URL"):
        monkeypatch.delenv(name, raising=False)
    spec = importlib.util.spec_from_file_location("connect_lambda_handler", HANDLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_posts_the_contact_stream_with_the_ingest_token(lambda_module, monkeypatch, caplog):
    receiver = Receiver([202, 409])
    monkeypatch.setenv("STREAMGUARD_URL", receiver.url + "/")
    monkeypatch.setenv("STREAMGUARD_INGEST_TOKEN", TOKEN)
    try:
        with caplog.at_level(logging.INFO):
            first = lambda_module.handler(copy.deepcopy(EVENT), None)
            again = lambda_module.handler(copy.deepcopy(EVENT), None)
    finally:
        receiver.close()
    assert first == {"streamguard": "accepted", "status": "202"}
    assert again == {"streamguard": "already_reading", "status": "409"}
    request = receiver.requests[0]
    assert request["path"] == "/api/kvs/streams"
    assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert json.loads(request["body"]) == {
        "call_id": "4a573372-1f28-4e26-b97b-XXXXXXXXXXX",
        "stream_arn": ARN,
        "start_fragment": "91343852333181432392682062622220590765191907586",
        "start_timestamp": 1571360125.131,
    }
    assert TOKEN not in caplog.text and "+1234567890" not in caplog.text


def test_token_from_secrets_manager(lambda_module, monkeypatch, tmp_path):
    pytest.importorskip("boto3")
    receiver = Receiver([202])
    monkeypatch.setenv("STREAMGUARD_URL", receiver.url)
    monkeypatch.setenv(
        "STREAMGUARD_TOKEN_SECRET_ARN", "arn:aws:secretsmanager:eu-west-2:1:secret:sg"
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", receiver.url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTONLY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-only")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    try:
        assert lambda_module.handler(copy.deepcopy(EVENT))["streamguard"] == "accepted"
        assert lambda_module.handler(copy.deepcopy(EVENT))["streamguard"] == "error"  # 500
    finally:
        receiver.close()
    targets = [r["headers"].get("X-Amz-Target") for r in receiver.requests]
    assert targets.count("secretsmanager.GetSecretValue") == 1  # cached for the container
    posts = [r for r in receiver.requests if r["path"] == "/api/kvs/streams"]
    assert posts[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e["Details"]["ContactData"].pop("MediaStreams"), "ValueError"),
        (lambda e: e["Details"]["ContactData"].pop("ContactId"), "ValueError"),
        (lambda e: None, "URLError"),  # the daemon is down
    ],
)
def test_never_breaks_the_contact_flow(lambda_module, monkeypatch, mutate, reason):
    monkeypatch.setenv("STREAMGUARD_URL", "http://127.0.0.1:9")  # discard port: refused
    monkeypatch.setenv("STREAMGUARD_INGEST_TOKEN", TOKEN)
    event = copy.deepcopy(EVENT)
    mutate(event)
    assert lambda_module.handler(event) == {"streamguard": "error", "reason": reason}

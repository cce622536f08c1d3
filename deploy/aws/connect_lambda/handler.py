"""Amazon Connect -> streamguard: tell the daemon to read this contact's audio stream.

An "Invoke AWS Lambda function" block, placed after "Start media streaming" in a contact flow,
calls this handler with Connect's contact-flow event. It POSTs to the daemon's
``/api/kvs/streams``::

    {"call_id": ContactId, "stream_arn": MediaStreams.Customer.Audio.StreamARN,
     "start_fragment": ...StartFragmentNumber, "start_timestamp": ...StartTimestamp / 1000}

with ``Authorization: Bearer <token>``: the daemon's feeds token (``[auth] ingest_token``,
else ``token``; deploy/aws/connect_lambda/README.md). The daemon answers 202 (reading) or 409
(already reading this stream). The handler never raises into the contact flow: the call goes
on whether screening started or not, and the flow can branch on the returned ``streamguard``
attribute (``accepted``, ``already_reading`` or ``error``).

Configuration (Lambda environment):
  STREAMGUARD_URL               base URL of the daemon, e.g. https://streamguard.example.com
  STREAMGUARD_TOKEN_SECRET_ARN  Secrets Manager secret holding that token (preferred), or
  STREAMGUARD_INGEST_TOKEN      the token itself (e.g. from an encrypted environment variable)
  STREAMGUARD_TIMEOUT_SECONDS   HTTP timeout, default 3 (Connect waits at most 8 s for a Lambda)

Standard library only, plus boto3 (in the Lambda runtime) when the token is in Secrets Manager.
The token is never logged; neither is the caller's number.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from typing import Any

log = logging.getLogger()
log.setLevel(logging.INFO)

_token_cache: dict[str, str] = {}


def _token() -> str:
    """The daemon's /api token: from Secrets Manager (cached per container) or the environment."""
    secret_arn = os.environ.get("STREAMGUARD_TOKEN_SECRET_ARN", "").strip()
    if secret_arn:
        if secret_arn not in _token_cache:
            import boto3

            answer = boto3.client("secretsmanager").get_secret_value(SecretId=secret_arn)
            _token_cache[secret_arn] = answer["SecretString"].strip()
        return _token_cache[secret_arn]
    token = os.environ.get("STREAMGUARD_INGEST_TOKEN", "").strip()
    if not token:
        raise RuntimeError("set STREAMGUARD_TOKEN_SECRET_ARN or STREAMGUARD_INGEST_TOKEN")
    return token


def request_body(event: dict[str, Any]) -> dict[str, Any]:
    """The daemon's request from a Connect contact-flow event; ValueError saying what lacks."""
    details = event.get("Details") or {}
    contact = details.get("ContactData") or {}
    params = details.get("Parameters") or {}
    audio = ((contact.get("MediaStreams") or {}).get("Customer") or {}).get("Audio") or {}
    call_id = contact.get("ContactId")
    stream_arn = audio.get("StreamARN") or params.get("stream_arn")
    if not call_id:
        raise ValueError("the event has no Details.ContactData.ContactId")
    if not stream_arn:
        raise ValueError(
            "no MediaStreams.Customer.Audio.StreamARN: put a Start media streaming block first"
        )
    body: dict[str, Any] = {"call_id": call_id, "stream_arn": stream_arn}
    fragment = audio.get("StartFragmentNumber") or params.get("start_fragment")
    if fragment:
        body["start_fragment"] = str(fragment)
    start_ms = audio.get("StartTimestamp")
    if start_ms and str(start_ms).isdigit():
        body["start_timestamp"] = int(start_ms) / 1000  # Connect gives epoch milliseconds
    return body


def handler(event: dict[str, Any], context: Any = None) -> dict[str, str]:
    """Lambda entry point: returns a flat string map for the contact flow."""
    try:
        body = request_body(event)
        url = os.environ["STREAMGUARD_URL"].rstrip("/") + "/api/kvs/streams"
        timeout = float(os.environ.get("STREAMGUARD_TIMEOUT_SECONDS", "3"))
        request = urllib.request.Request(
            url,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {_token()}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                status = answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
    except Exception as exc:  # never break the contact flow; say why in the log
        log.error("streamguard not started: %s: %s", type(exc).__name__, str(exc)[:200])
        return {"streamguard": "error", "reason": type(exc).__name__}
    outcome = {202: "accepted", 409: "already_reading"}.get(status, "error")
    log.info("streamguard %s for contact %s (HTTP %s)", outcome, body["call_id"], status)
    return {"streamguard": outcome, "status": str(status)}

"""The operator loop's ``/api`` routes (#18): evidence audio, analyst labels, the model swap.

The handlers live beside what they serve (:mod:`streamguard.evidence.api`,
:mod:`streamguard.labels`, :mod:`streamguard.model_swap`) as plain functions that return
``(status, headers, body)``, so they are tested without a server. This module only adapts them
to the route table (:mod:`streamguard.server.api`), which applies the guard: the alerts token,
writes from loopback only while no token is set, browser origins, JSON bodies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from websockets.datastructures import Headers
from websockets.http11 import Response

from streamguard.server.api import ApiRequest, ApiRoute

__all__ = ["OperatorApi", "operator_routes", "to_response"]

#: The ``who`` of a label: the API has one credential for reads and writes, the alerts token.
WHO_TOKEN = "alerts_token"
WHO_LOCAL = "local"


def to_response(result: tuple[int, dict[str, str], bytes | Path]) -> Response:
    """A handler's ``(status, headers, body)`` as the server's response (a ``Path`` body: the
    file's bytes, read by the caller off the loop)."""
    status, headers, body = result
    assert isinstance(body, bytes)
    phrase = HTTPStatus(status).phrase
    return Response(status, phrase, Headers({**headers, "Content-Length": str(len(body))}), body)


@dataclass(frozen=True)
class OperatorApi:
    """What the routes need from the daemon, as callables (this layer imports no daemon).

    ``evidence``: the daemon's evidence thread (:class:`~streamguard.evidence.writer.
    EvidenceWriter`), None while ``[evidence] keep = "none"``; ``commit_label``: publish a
    ``label`` draft and wait for the log; ``swap_model``: :meth:`Daemon.swap_model`;
    ``token_set``: whether ``[auth]`` guards the API (a label's ``who``).
    """

    evidence: Any
    commit_label: Callable[[Any], Awaitable[Any]]
    swap_model: Callable[[str], Awaitable[Any]]
    token_set: bool


def operator_routes(api: OperatorApi) -> list[ApiRoute]:
    """``GET``/``DELETE /api/calls/{call_id}/evidence``, ``GET .../evidence/{clip}``,
    ``POST /api/labels``, ``POST /api/model``."""
    from streamguard.evidence import api as evidence_api
    from streamguard.labels import handle_post_labels
    from streamguard.model_swap import handle_post_model

    async def on_evidence(handler: Callable[..., Any], *args: Any) -> Any:
        if api.evidence is None:  # evidence off: an empty list, 404 or nothing to delete
            return handler(None, *args)
        return await api.evidence.call(handler, *args)

    async def list_clips(request: ApiRequest) -> Response:
        result = await on_evidence(evidence_api.handle_get_evidence, request.params["call_id"])
        return to_response(result)

    async def get_clip(request: ApiRequest) -> Response:
        params = request.params
        status, headers, body = await on_evidence(
            evidence_api.handle_get_clip, params["call_id"], params["clip"]
        )
        if isinstance(body, Path):  # clips are bounded by the call's length; read off the loop
            body = await asyncio.to_thread(body.read_bytes)
        return to_response((status, headers, body))

    async def delete_clips(request: ApiRequest) -> Response:
        if api.evidence is None:
            result = evidence_api.handle_delete_evidence(None, request.params["call_id"], _drop)
        else:
            result = await api.evidence.call(
                evidence_api.handle_delete_evidence,
                request.params["call_id"],
                api.evidence.publish_threadsafe,
            )
        return to_response(result)

    async def post_label(request: ApiRequest) -> Response:
        who = WHO_TOKEN if api.token_set else WHO_LOCAL
        return to_response(await handle_post_labels(request.body, who=who, commit=api.commit_label))

    async def post_model(request: ApiRequest) -> Response:
        return to_response(await handle_post_model(request.body, swap=api.swap_model))

    evidence = "/api/calls/{call_id}/evidence"
    return [
        ApiRoute("GET", evidence, list_clips),
        ApiRoute("GET", evidence + "/{clip}", get_clip),
        ApiRoute("DELETE", evidence, delete_clips),
        ApiRoute("POST", "/api/labels", post_label),
        ApiRoute("POST", "/api/model", post_model),
    ]


def _drop(event: Any) -> None:
    """``publish`` while evidence is off: there is nothing to delete, so nothing to say."""

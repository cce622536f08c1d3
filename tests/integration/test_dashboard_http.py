"""The dashboard's HTTP side on a real daemon: static files served safely, /api/status, origins."""

from __future__ import annotations

import asyncio
import http.client
import json
import re

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from streamguard.server.dashboard import CONTENT_SECURITY_POLICY, load_static

pytestmark = pytest.mark.integration

TOKEN = "dash-s3cret"


def get(port: int, path: str, headers: dict[str, str] | None = None):
    """One raw GET (http.client sends the path exactly as given: no normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


async def aget(port: int, path: str, headers: dict[str, str] | None = None):
    return await asyncio.to_thread(get, port, path, headers)


async def test_page_and_assets_are_served_with_types_cache_and_csp(make_daemon):
    daemon = await make_daemon(auth={"token": TOKEN})  # the page itself needs no token
    status, headers, body = await aget(daemon.port, "/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert b'<script type="module" src="/dashboard/app.js">' in body
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "unsafe" not in CONTENT_SECURITY_POLICY
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Cache-Control"] == "no-cache"
    etag = headers["ETag"]

    # revalidation: same file, 304 and no body; a stale tag gets the file
    status, headers, body = await aget(daemon.port, "/", {"If-None-Match": etag})
    assert (status, body) == (304, b"") and headers["ETag"] == etag
    status, _, body = await aget(daemon.port, "/", {"If-None-Match": '"stale"'})
    assert status == 200 and body

    expected_types = {
        "/dashboard/app.js": "text/javascript; charset=utf-8",
        "/dashboard/state.js": "text/javascript; charset=utf-8",
        "/dashboard/chart.js": "text/javascript; charset=utf-8",
        "/dashboard/style.css": "text/css; charset=utf-8",
        "/dashboard/favicon.svg": "image/svg+xml",
    }
    for path, content_type in expected_types.items():
        status, headers, body = await aget(daemon.port, path)
        assert status == 200, path
        assert headers["Content-Type"] == content_type, path
        assert int(headers["Content-Length"]) == len(body) > 0


#: Paths a scanner or a traversal attempt would try: none of them may be answered with a file.
NOT_SERVED = [
    "/dashboard/../daemon.py",
    "/dashboard/..%2f__init__.py",
    "/dashboard/%2e%2e/__init__.py",
    "/dashboard/static/app.js",
    "/dashboard/",
    "/dashboard",
    "/index.html",
    "/dashboard/app.js/",
    "//dashboard/app.js",
    "/dashboard/APP.JS",
    "/dashboard/app.js%00.html",
    "/../../etc/passwd",
    "/dashboard/__init__.py",
]


async def test_nothing_but_the_shipped_files_is_served(make_daemon):
    daemon = await make_daemon()
    for path in NOT_SERVED:
        status, _, body = await aget(daemon.port, path)
        assert status == 404, (path, body[:80])
        assert b"import" not in body and b"root:" not in body


async def test_status_reports_model_thresholds_and_health(make_daemon):
    daemon = await make_daemon(smoothing={"margin": 0.2})
    status, headers, body = await aget(daemon.port, "/api/status")
    assert status == 200 and headers["Content-Type"] == "application/json"
    data = json.loads(body)
    info = daemon.detector.info
    assert data["model"]["name"] == info.name == "tiny"
    assert data["model"]["threshold"] == info.threshold
    assert data["smoothing"]["on_threshold"] == info.threshold
    assert data["smoothing"]["off_threshold"] == pytest.approx(info.threshold - 0.2)
    assert data["alerts_path"] == "/alerts"
    assert data["health"]["status"] == "ready"
    assert data["last_seq"] == 0
    # the daemon's own clock, so a page can tell when it started (uptime) and see a restart
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["time"])


async def test_status_needs_the_alerts_token_and_the_page_does_not(make_daemon):
    daemon = await make_daemon(auth={"token": TOKEN})
    assert (await aget(daemon.port, "/"))[0] == 200
    assert (await aget(daemon.port, "/dashboard/app.js"))[0] == 200
    status, headers, _ = await aget(daemon.port, "/api/status")
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    wrong = {"Authorization": "Bearer nope"}
    assert (await aget(daemon.port, "/api/status", wrong))[0] == 403  # wrong, not missing
    right = {"Authorization": f"Bearer {TOKEN}"}
    status, _, body = await aget(daemon.port, "/api/status", right)
    assert status == 200 and json.loads(body)["model"]["name"] == "tiny"
    assert TOKEN.encode() not in body


async def test_browsers_may_subscribe_only_from_the_daemons_own_page(make_daemon):
    daemon = await make_daemon()
    url = f"ws://127.0.0.1:{daemon.port}/alerts"
    own = {"Origin": f"http://127.0.0.1:{daemon.port}"}
    async with connect(url, additional_headers=own, subprotocols=["streamguard.v1"]) as ws:
        assert ws.subprotocol == "streamguard.v1"
    async with connect(url):  # no Origin: a script, `streamguard watch`
        pass
    for origin in ("http://evil.example", f"http://127.0.0.1:{daemon.port + 1}", "null"):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, additional_headers={"Origin": origin}):
                pass
        assert refused.value.response.status_code == 403, origin


def test_every_file_the_page_loads_is_shipped():
    """index.html's src/href and every ES module import resolve to a shipped file."""
    static = load_static()
    html = static["/"].body.decode()
    wanted = set(re.findall(r'(?:src|href)="(/[^"]*)"', html))
    for path, file in static.items():
        if path.endswith(".js"):
            for name in re.findall(r'from "\./([^"]+)"', file.body.decode()):
                wanted.add("/dashboard/" + name)
    assert wanted, "index.html loads nothing?"
    assert wanted <= set(static), sorted(wanted - set(static))
    # no inline script or style for the CSP to refuse, and nothing from elsewhere
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert " style=" not in html and "<style" not in html
    for path, file in static.items():
        if path.endswith((".js", ".html", ".css")):
            assert not re.search(rb"https?://(?!www\.w3\.org/2000/svg)", file.body), path

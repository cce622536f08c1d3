"""The dashboard in a real browser (Debian's headless chromium) against a real daemon.

A real call is streamed over ``/twilio`` (the provider's exact frames, in real time) while
chromium shows the page; the test reads what the page shows (its DOM) and compares it with what
a plain ``/alerts`` subscriber received. The tiny test model's threshold is lowered to 0.01 so
its scores raise an alert. Screenshots land in the test's tmp dir (``shots/``).
"""

from __future__ import annotations

import asyncio
import functools
import json
from urllib.parse import quote

import numpy as np
import pytest

from streamguard.audio.file import read_audio
from streamguard.client import send_frames
from streamguard.daemon import Daemon
from streamguard.model import Detector
from streamguard.sources.senders import twilio_frames

from .browser import Browser, TcpForwarder, needs_chromium
from .conftest import Subscriber

pytestmark = [pytest.mark.integration, pytest.mark.slow, needs_chromium]

TOKEN = "dash-Token/with+chars=~"

# JS snippets; arguments[0] is a call id, ID the CSS-escaped form of it
ID = "const ID = CSS.escape(arguments[0]);"
CONNECTION = "return document.getElementById('connection').dataset.state"
CARD = ID + "return document.querySelector(`article.call[data-call-id='${ID}']`)"
POINTS = (
    ID
    + """
  const card = document.querySelector(`article.call[data-call-id='${ID}']`);
  if (!card) return null;
  const out = {};
  for (const t of card.querySelectorAll('.track')) out[t.dataset.track] = Number(t.dataset.points);
  return out;
"""
)
RAISED = (
    ID
    + """
  const card = document.querySelector(`article.call[data-call-id='${ID}']`);
  const item = document.querySelector(`#alerts li.alert-raised[data-call-id='${ID}']`);
  return card && card.dataset.alert === 'true' && item ? item.textContent : null;
"""
)
ALERT_LISTED = ID + "return !!document.querySelector(`li.alert-raised[data-call-id='${ID}']`)"
ENDED = (
    ID
    + """
  const row = document.querySelector(`tr.ended-row[data-call-id='${ID}']`);
  return row ? {verdict: row.dataset.verdict, text: row.textContent} : null;
"""
)
EXPAND = ID + "document.querySelector(`tr.ended-row[data-call-id='${ID}']`).click()"
DETAIL_POINTS = (
    ID
    + """
  const rows = document.querySelectorAll(`tr.ended-detail[data-call-id='${ID}'] .track`);
  if (!rows.length) return null;
  const out = {};
  for (const t of rows) out[t.dataset.track] = Number(t.dataset.points);
  return out;
"""
)


@pytest.fixture
def alerting_detector(tiny_detector):
    """The tiny model with a threshold its scores cross: every call raises an alert."""
    return Detector(tiny_detector.module, tiny_detector.info.replace(threshold=0.01), device="cpu")


@pytest.fixture
def start_daemon(make_daemon, alerting_detector):
    return functools.partial(make_daemon, alerting_detector)


@pytest.fixture
async def browser(tmp_path):
    async with Browser(tmp_path / "profile", tmp_path / "shots") as b:
        yield b


@pytest.fixture
def two_track_call(fixtures_dir):
    """10 s of real speech on inbound, the same at half level on outbound (8 kHz)."""
    rate, audio = read_audio(fixtures_dir / "speech_10s_8k.wav")
    return rate, np.stack([audio[0], audio[0] * 0.5])


def score_counts(events: list[dict], call_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in events:
        if e["type"] == "score" and e["call_id"] == call_id:
            counts[e["track"]] = counts.get(e["track"], 0) + 1
    return counts


def page_connections(daemon: Daemon) -> list:
    """The daemon's /alerts connections opened by a browser page (they offer streamguard.v1)."""
    return [
        c
        for c in daemon.server.connections
        if c.request is not None
        and c.request.path.startswith("/alerts")
        and c.subprotocol == "streamguard.v1"
    ]


async def test_live_call_appears_updates_alerts_and_keeps_its_verdict(
    start_daemon, browser, two_track_call
):
    daemon = await start_daemon()
    base = f"127.0.0.1:{daemon.port}"
    rate, audio = two_track_call
    call_id = "CA-dashboard-live"
    async with Subscriber(f"ws://{base}/alerts") as sub:
        await browser.get(f"http://{base}/")
        await browser.wait_for(f"{CONNECTION} === 'live'", what="the page to connect")
        header = await browser.js("return document.querySelector('.bar').textContent")
        assert "tiny" in header and "0.010" in header  # model name and its threshold

        frames = twilio_frames(audio, rate, call_sid=call_id)
        feed = asyncio.create_task(send_frames(f"ws://{base}/twilio", frames, realtime=True))

        await browser.wait_for(CARD, call_id, what="the call card")
        assert not feed.done(), "the call must show while it is still streaming"
        first = await browser.wait_for(
            f"const p = (() => {{{POINTS}}})(); return p && p.inbound >= 1 ? p : null",
            call_id,
            what="a first score",
        )
        await browser.wait_for(
            f"const p = (() => {{{POINTS}}})(); return p && p.inbound > arguments[1] ? p : null",
            call_id,
            first["inbound"],
            what="the scores to update",
        )
        alert_text = await browser.wait_for(RAISED, call_id, what="the alert")
        assert "RAISED" in alert_text and call_id in alert_text
        assert not feed.done(), "scores and the alert must show while the call streams"
        await browser.screenshot("1-live-call-with-alert")

        result = await feed
        assert result.close_code == 1000
        (ended,) = await sub.wait_call_ended()
        verdict = ended["summary"]["verdict"]

        row = await browser.wait_for(ENDED, call_id, what="the ended call")
        assert row["verdict"] == verdict == "fake"
        assert ended["reason"] in row["text"]
        assert await browser.js(CARD, call_id) is None, "an ended call leaves the open list"
        # every score the subscriber got is on the page's timelines
        await browser.js(EXPAND, call_id)
        shown = await browser.wait_for(
            f"return (() => {{{DETAIL_POINTS}}})()", call_id, what="the timelines"
        )
        assert shown == score_counts(sub.events, call_id)
        await browser.screenshot("2-call-ended")

        # the filter by call id: another id hides it, a part of its own shows it again
        for text, visible in (("CA-someone-else", False), ("dashboard-LIVE", True), ("", True)):
            await browser.js(
                "const f = document.getElementById('filter'); f.value = arguments[0];"
                "f.dispatchEvent(new Event('input'));",
                text,
            )
            await browser.wait_for(
                f"return !!(() => {{{ENDED}}})() === arguments[1]",
                call_id,
                visible,
                what=f"the filter {text!r}",
            )

    # a reload rebuilds the page from the daemon's history (?tail=N)
    await browser.call(browser.driver.refresh)
    await browser.wait_for(f"{CONNECTION} === 'live'", what="the page to reconnect")
    row = await browser.wait_for(ENDED, call_id, what="the ended call after a reload")
    assert row["verdict"] == verdict
    assert await browser.wait_for(ALERT_LISTED, call_id, what="the alert after a reload")
    (conn,) = page_connections(daemon)
    assert "tail=" in conn.request.path
    await browser.screenshot("3-after-reload")
    errors = [m for m in await browser.console() if "SEVERE" in m or "Content Security" in m]
    assert errors == []


async def test_page_reconnects_and_resumes_without_losing_events(
    start_daemon, browser, two_track_call
):
    daemon = await start_daemon()
    base = f"127.0.0.1:{daemon.port}"
    rate, audio = two_track_call
    call_id = "CA-dashboard-reconnect"
    async with Subscriber(f"ws://{base}/alerts") as sub:
        await browser.get(f"http://{base}/")
        await browser.wait_for(f"{CONNECTION} === 'live'", what="the page to connect")
        frames = twilio_frames(audio, rate, call_sid=call_id)
        feed = asyncio.create_task(send_frames(f"ws://{base}/twilio", frames, realtime=True))
        await browser.wait_for(
            f"const p = (() => {{{POINTS}}})(); return p && p.inbound >= 1 ? p : null",
            call_id,
            what="a first score",
        )
        # the network drops the page's subscription mid-call; events go on being published
        seen_before = sub.events[-1]["seq"]
        for conn in page_connections(daemon):
            await conn.close(1001, "going away")
        await browser.wait_for(f"{CONNECTION} === 'reconnecting'", what="the page to notice")
        await browser.wait_for(f"{CONNECTION} === 'live'", timeout=15, what="it to reconnect")
        (conn,) = page_connections(daemon)
        since = int(conn.request.path.split("since=")[1])
        assert since >= seen_before - 1  # resumed after what it had, not from scratch

        await feed
        await sub.wait_call_ended()
        await browser.wait_for(ENDED, call_id, what="the ended call")
        await browser.js(EXPAND, call_id)
        shown = await browser.wait_for(
            f"return (() => {{{DETAIL_POINTS}}})()", call_id, what="the timelines"
        )
        assert shown == score_counts(sub.events, call_id)
        assert sub.events[-1]["seq"] > since, "events were published while it was away"
        await browser.screenshot("reconnected")


async def test_with_a_token_the_page_asks_once_and_never_leaks_it(
    start_daemon, browser, fixtures_dir, capfd
):
    daemon = await start_daemon(auth={"token": TOKEN})
    base = f"127.0.0.1:{daemon.port}"
    await browser.get(f"http://{base}/")
    await browser.wait_for(
        "return !document.getElementById('token-dialog').hidden", what="the token dialog"
    )
    assert await browser.js(CONNECTION) == "token"
    assert page_connections(daemon) == []
    await browser.screenshot("token-dialog")

    async def submit(text: str) -> None:
        await browser.js(
            "const i = document.getElementById('token-input'); i.value = arguments[0];"
            "document.getElementById('token-form').requestSubmit();",
            text,
        )

    await submit("not ascii é")  # a header cannot carry it: said at once, nothing sent
    text = await browser.wait_for(
        "const e = document.getElementById('token-error'); return !e.hidden && e.textContent",
        what="the format hint",
    )
    assert "ASCII" in text and await browser.js("return sessionStorage.length") == 0
    await submit("wrong")
    await browser.wait_for(
        "const e = document.getElementById('token-error');"
        "return !e.hidden && e.textContent.includes('refused')",
        what="the refusal",
    )
    await submit(TOKEN)
    await browser.wait_for(f"{CONNECTION} === 'live'", what="the page to connect")

    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    call_id = "CA-dashboard-token"
    feed = twilio_frames(mono, rate, call_sid=call_id)
    await send_frames(f"ws://{base}/twilio", feed, token=TOKEN)  # the feeds need it too
    row = await browser.wait_for(ENDED, call_id, what="the call, with the token")
    assert row["verdict"] == "fake"

    # kept for this tab's session only, and only there
    storage = await browser.js(
        "return {session: sessionStorage.getItem('streamguard.token'),"
        " local: localStorage.length, cookie: document.cookie, url: location.href}"
    )
    assert storage["session"] == TOKEN
    assert storage["local"] == 0 and storage["cookie"] == ""
    (conn,) = page_connections(daemon)
    assert "token" not in conn.request.path and "token" not in storage["url"]

    # a reload keeps it for the session: no second prompt
    await browser.call(browser.driver.refresh)
    await browser.wait_for(f"{CONNECTION} === 'live'", what="the page to reconnect")
    assert await browser.js("return document.getElementById('token-dialog').hidden")
    assert await browser.wait_for(ENDED, call_id, what="the call after a reload")
    await browser.screenshot("with-token")

    logged = capfd.readouterr()
    console = await browser.console()
    encoded = json.dumps(TOKEN)[1:-1]
    for text in (logged.out, logged.err, "\n".join(console)):
        assert TOKEN not in text and encoded not in text


async def test_a_restarted_daemon_rebuilds_the_page_from_its_own_history(
    start_daemon, browser, fixtures_dir
):
    """Behind one address (a TCP relay, as a load balancer would be) the daemon is replaced:
    the page notices, says so, and shows the new run's calls instead of the old run's."""
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    # Two runs that share no event log (memory backend; or two nodes without a shared log):
    # the second's seq begins again. With the durable log, seq continues across a restart and
    # the page simply resumes with ?since= (tests/integration/test_durability_process.py).
    memory = {"backend": "memory"}
    first = await start_daemon(events=memory)
    async with TcpForwarder(first.port) as relay:
        base = f"127.0.0.1:{relay.port}"
        await browser.get(f"http://{base}/")
        await browser.wait_for(f"{CONNECTION} === 'live'", what="the page to connect")
        await send_frames(f"ws://{base}/twilio", twilio_frames(mono, rate, call_sid="CA-old"))
        await browser.wait_for(ENDED, "CA-old", what="the first run's call")

        await first.stop()
        second = await start_daemon(events=memory)
        relay.target = second.port
        await browser.wait_for(
            "return !document.getElementById('banner').hidden"
            " && document.getElementById('banner').textContent.includes('restarted')",
            timeout=30,
            what="the restart notice",
        )
        await browser.wait_for(f"{CONNECTION} === 'live'", what="the page to reconnect")
        await send_frames(f"ws://{base}/twilio", twilio_frames(mono, rate, call_sid="CA-new"))
        await browser.wait_for(ENDED, "CA-new", what="the new run's call")
        assert await browser.js(ENDED, "CA-old") is None  # the new run never saw it
        (conn,) = page_connections(second)
        assert "tail=" in conn.request.path
        await browser.screenshot("after-restart")


# ------------------------------------------------ the operator's controls (#18, #20)

OPERATOR = ID + "return document.querySelector(`tr.ended-detail[data-call-id='${ID}'] .operator`)"
LABEL_SHOWN = (
    ID
    + """
  const badge = document.querySelector(`tr.ended-row[data-call-id='${ID}'] .label`);
  return badge ? badge.dataset.label : null;
"""
)
CLICK_LABEL = (
    ID
    + """
  const ops = document.querySelector(`tr.ended-detail[data-call-id='${ID}'] .operator`);
  ops.querySelector('.label-note').value = arguments[2];
  ops.querySelector(`button.label-button[data-label='${arguments[1]}']`).click();
"""
)
AUDIO = (
    ID
    + """
  const audio = document.querySelector(`tr.ended-detail[data-call-id='${ID}'] audio`);
  if (!audio) return null;
  return {src: audio.getAttribute('src'), ready: audio.readyState, duration: audio.duration,
          clip: audio.dataset.clip};
"""
)
PLAYABLE = f"const a = (() => {{{AUDIO}}})(); return a && a.ready >= 1 && a.duration > 0 ? a : null"
OPERATOR_ERROR = (
    ID
    + """
  const e = document.querySelector(`tr.ended-detail[data-call-id='${ID}'] .operator-error`);
  return e ? e.textContent : null;
"""
)


async def submit_token(browser: Browser, token: str) -> None:
    await browser.wait_for(
        "return !document.getElementById('token-dialog').hidden", what="the token dialog"
    )
    await browser.js(
        "const i = document.getElementById('token-input'); i.value = arguments[0];"
        "document.getElementById('token-form').requestSubmit();",
        token,
    )
    await browser.wait_for(f"{CONNECTION} === 'live'", what="the page to connect")


async def test_labels_evidence_and_first_verdict_on_a_real_call(
    start_daemon, tmp_path, fixtures_dir
):
    """With a token and ``[evidence] keep = "alerts"``: the ended call's card plays its evidence
    (a blob: fetched with the header), labels it (POST -> ``label`` event -> shown, and again
    after a reload from the replay; the last label wins), deletes the evidence, shows each
    track's first verdict, and no URL the page requests ever carries the token."""
    evidence_dir = tmp_path / "evidence"
    daemon = await start_daemon(
        auth={"token": TOKEN}, evidence={"keep": "alerts", "path": str(evidence_dir)}
    )
    base = f"127.0.0.1:{daemon.port}"
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    call_id = "CA-dashboard-operator"
    async with (
        Browser(tmp_path / "profile", tmp_path / "shots", network=True) as browser,
        Subscriber(f"ws://{base}/alerts?token={quote(TOKEN)}") as sub,
    ):
        await browser.get(f"http://{base}/")
        await submit_token(browser, TOKEN)
        await send_frames(
            f"ws://{base}/twilio", twilio_frames(mono, rate, call_sid=call_id), token=TOKEN
        )
        await sub.wait_for(lambda ev: any(e["type"] == "evidence_saved" for e in ev))
        (saved,) = sub.of_type("evidence_saved")
        await browser.wait_for(ENDED, call_id, what="the ended call")
        await browser.js(EXPAND, call_id)
        await browser.wait_for(OPERATOR, call_id, what="the label buttons")

        # the evidence plays: a blob: URL the page made from the WAV it fetched
        audio = await browser.wait_for(PLAYABLE, call_id, what="playable evidence audio")
        assert audio["src"].startswith("blob:") and audio["clip"] == saved["clip"]
        assert abs(audio["duration"] - (saved["end"] - saved["start"])) < 0.1

        # first verdict: the end of each track's first scored window, in call seconds
        first = {}
        for e in sub.of_type("score"):
            first.setdefault(e["track"], e["end"])
        shown = await browser.js(
            ID + "const out = {};"
            "for (const t of document.querySelectorAll("
            "`tr.ended-detail[data-call-id='${ID}'] .track`))"
            " out[t.dataset.track] = Number(t.dataset.firstVerdict);"
            "return out;",
            call_id,
        )
        assert shown == first and all(0 < v <= 5 for v in first.values())

        # label round trip: click -> POST /api/labels -> label event over /alerts -> shown
        await browser.js(CLICK_LABEL, call_id, "real", "the agent's own voice?")
        assert await browser.wait_for(LABEL_SHOWN, call_id, what="the label") == "real"
        await browser.js(CLICK_LABEL, call_id, "fake", "cloned voice")
        await browser.wait_for(f"return (() => {{{LABEL_SHOWN}}})() === 'fake'", call_id)
        labels = sub.of_type("label")
        assert [(e["label"], e["note"], e["who"], e["track"]) for e in labels] == [
            ("real", "the agent's own voice?", "alerts_token", None),
            ("fake", "cloned voice", "alerts_token", None),
        ]
        await browser.screenshot("operator-labelled")

        # a refused request is one line on the card, and nothing is stored
        await browser.js("sessionStorage.setItem('streamguard.token', 'wrong')")
        await browser.js(CLICK_LABEL, call_id, "unsure", "")
        error = await browser.wait_for(OPERATOR_ERROR, call_id, what="the refusal")
        assert "Label not saved" in error and "403" in error and "\n" not in error
        assert len(sub.of_type("label")) == 2

        # a reload rebuilds the label from the daemon's replay; the last one wins
        await browser.js("sessionStorage.setItem('streamguard.token', arguments[0])", TOKEN)
        await browser.call(browser.driver.refresh)
        await browser.wait_for(f"{CONNECTION} === 'live'", what="the page to reconnect")
        await browser.wait_for(f"return (() => {{{LABEL_SHOWN}}})() === 'fake'", call_id)
        title = await browser.js(
            ID + "return document.querySelector(`tr.ended-row[data-call-id='${ID}'] .label`).title",
            call_id,
        )
        assert "cloned voice" in title and "alerts_token" in title

        # delete (confirmed): 204, the files go, and the player goes on evidence_deleted
        await browser.js(EXPAND, call_id)
        await browser.wait_for(PLAYABLE, call_id, what="the evidence after a reload")
        await browser.js(
            ID + "window.confirm = () => true;"
            "document.querySelector(`tr.ended-detail[data-call-id='${ID}'] .evidence-delete`)"
            ".click()",
            call_id,
        )
        await sub.wait_for(lambda ev: any(e["type"] == "evidence_deleted" for e in ev))
        await browser.wait_for(f"return (() => {{{AUDIO}}})() === null", call_id)
        (deleted,) = sub.of_type("evidence_deleted")
        assert deleted["clips"] == [saved["clip"]] and deleted["reason"] == "request"
        assert not list(evidence_dir.rglob("*.wav"))
        await browser.screenshot("operator-deleted")

        # the token never appeared in a URL the page requested (chromium's own network log)
        urls = await browser.requested_urls()
        assert any("/evidence/" in u for u in urls) and any(u.startswith("blob:") for u in urls)
        assert any(u.endswith("/api/labels") for u in urls)
        secrets = {TOKEN, quote(TOKEN, safe=""), quote(TOKEN), "wrong"}
        assert not [u for u in urls for s in secrets if s in u]
        errors = [m for m in await browser.console() if "Content Security" in m]
        assert errors == []

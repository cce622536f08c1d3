"""``streamguard label`` and ``streamguard evidence``: the real CLI entry point on real files.

The label goes into a real SQLite event log (read back with ``streamguard events``); the
evidence store is the real folder ``[evidence] path`` names. While a daemon holds the log the
commands go to its API: here a real HTTP server on 127.0.0.1 stands in for the daemon's
front door (whose /api routes are wired elsewhere) and answers what the handlers decide.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import soundfile as sf

from streamguard.alerts.store import EventStore, WriterLock
from streamguard.cli import main
from streamguard.evidence import EvidenceStore
from tests.unit.test_operator_api import alerting_clip


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "streamguard.toml"
    path.write_text(
        f'[events]\npath = "{tmp_path / "events.db"}"\n'
        f'[evidence]\nkeep = "alerts"\npath = "{tmp_path / "evidence"}"\n'
    )
    return path


def logged(tmp_path) -> list:
    return EventStore(tmp_path / "events.db", readonly=True).read(0).events


def test_label_goes_into_the_log_and_reads_back_with_events(tmp_path, config, capsys):
    assert main(["label", "CA1", "fake", "--track", "inbound", "--note", "IVR", "--config",
                 str(config), "--json"]) == 0  # fmt: skip
    stored = json.loads(capsys.readouterr().out)
    assert (stored["seq"], stored["who"], stored["label"]) == (1, "local", "fake")
    assert main(["label", "CA2", "real", "--config", str(config)]) == 0
    assert "REAL by local" in capsys.readouterr().out
    assert [(e.seq, e.call_id, e.track) for e in logged(tmp_path)] == [
        (1, "CA1", "inbound"),
        (2, "CA2", None),
    ]
    assert main(["events", "--config", str(config), "--types", "label"]) == 0
    out = capsys.readouterr().out
    assert "FAKE by local note='IVR'" in out and "CA2" in out


def test_a_bad_label_is_one_line_and_nothing_is_stored(tmp_path, config, capsys):
    assert main(["label", "CA1", "real", "--note", "x" * 1001, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "note: longer than 1000" in err
    assert not (tmp_path / "events.db").exists() or logged(tmp_path) == []


class _FakeFrontDoor(BaseHTTPRequestHandler):
    """Stands in for the daemon's front door: routes /api/labels to the real handler logic's
    answer shape (201 + the event) and records what it was sent."""

    seen: ClassVar[list] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append((self.path, self.headers.get("Authorization"), json.loads(body)))
        event = {"type": "label", "seq": 7, "ts": "2026-01-01T00:00:00.000Z", "model": "m",
                 "call_id": "CA1", "track": None, "source": None, "label": "real",
                 "note": None, "who": "ops"}  # fmt: skip
        raw = json.dumps(event).encode()
        self.send_response(201)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


def test_while_a_daemon_owns_the_log_the_label_goes_to_its_api(tmp_path, capsys):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeFrontDoor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = tmp_path / "c.toml"
    config.write_text(
        f'[events]\npath = "{tmp_path / "events.db"}"\n'
        f'[server]\nport = {server.server_address[1]}\n[auth]\nalerts_token = "s3cret-token"\n'
    )
    lock = WriterLock(tmp_path / "events.db")
    lock.acquire()  # what a running daemon holds
    try:
        assert main(["label", "CA1", "real", "--config", str(config)]) == 0
    finally:
        lock.release()
        server.shutdown()
    [(path, auth, body)] = _FakeFrontDoor.seen
    assert path == "/api/labels" and auth == "Bearer s3cret-token"
    assert body == {"call_id": "CA1", "label": "real"}
    assert "REAL by ops" in capsys.readouterr().out


def test_a_daemon_that_cannot_be_reached_is_one_line(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(f'[events]\npath = "{tmp_path / "events.db"}"\n[server]\nport = 9\n')
    lock = WriterLock(tmp_path / "events.db")
    lock.acquire()
    try:
        assert main(["label", "CA1", "real", "--config", str(config)]) != 0
    finally:
        lock.release()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "cannot reach the daemon" in err


def test_evidence_list_get_delete(tmp_path, config, capsys):
    store = EvidenceStore(tmp_path / "evidence")
    alerting_clip(store, "CA9")
    assert main(["evidence", "list", "CA9", "--config", str(config), "--json"]) == 0
    [clip] = json.loads(capsys.readouterr().out)["clips"]
    out = tmp_path / "out.wav"
    assert main(["evidence", "get", "CA9", clip["clip"], "-o", str(out), "--config",
                 str(config)]) == 0  # fmt: skip
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert sf.info(out).duration == pytest.approx(4.0)
    assert main(["evidence", "get", "CA9", clip["clip"], "-o", str(out), "--config",
                 str(config)]) == 2  # fmt: skip
    assert "exists" in capsys.readouterr().err
    assert main(["evidence", "get", "CA9", "0" * 16, "--config", str(config)]) != 0
    assert main(["evidence", "delete", "CA9", "--config", str(config)]) == 0
    assert "deleted 1 clips" in capsys.readouterr().out
    [event] = logged(tmp_path)
    assert (event.type, event.clips, event.reason) == ("evidence_deleted", [clip["clip"]],
                                                       "request")  # fmt: skip
    assert main(["evidence", "list", "CA9", "--config", str(config)]) == 0
    assert "no evidence" in capsys.readouterr().out
    assert not list((tmp_path / "evidence").rglob("*.wav"))

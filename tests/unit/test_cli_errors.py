"""Bad input to any command: one ``streamguard: error: ...`` line, a non-zero exit, no traceback.

Each case drives the real CLI entry point (``streamguard.cli.main``) the way an operator would,
on real sockets on 127.0.0.1 and real files, and checks what reaches stderr.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from streamguard.cli import main

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech_10s_8k.wav"
TRAINING = Path(__file__).resolve().parents[1] / "fixtures" / "training"


def one_error_line(capsys, *, contains: str = "") -> str:
    """The last stderr line is the error, and no traceback came before it."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("streamguard: error: ") and contains in line, err
    return line


@pytest.fixture
def busy_tcp_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture
def not_websocket_server():
    """A TCP server that answers every request with garbage (not HTTP, not WebSocket)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(10)

    def answer() -> None:
        try:
            while True:
                conn, _ = server.accept()
                with conn:
                    conn.recv(4096)
                    conn.sendall(b"garbage\r\n\r\n")
        except OSError:
            pass

    threading.Thread(target=answer, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


# ------------------------------------------------------------------------------- usage


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        ([], "streamguard"),
        (["bogus"], "streamguard"),
        (["scan"], "streamguard scan"),
        (["scan", "x.wav", "--threshold", "abc"], "streamguard scan"),
        (["model"], "streamguard model"),
        (["bench", "model", "--batch-sizes", "0,x"], "streamguard bench"),
        (["events", "--tail", "-1"], "streamguard events"),
    ],
)
def test_a_usage_error_is_one_line_naming_the_help_to_read(capsys, argv, command):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    out = capsys.readouterr()
    assert out.out == ""
    (line,) = out.err.splitlines()  # not the whole usage block
    assert line.startswith("streamguard: error: ") and line.endswith(f"(try '{command} --help')")


def test_output_into_a_closed_pipe_ends_quietly(tiny_model_dir):
    """``streamguard model info | head``: the reader is gone before the first write (here: its
    end is closed before the command starts, so every run hits EPIPE)."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "streamguard.cli", "model", "info", str(tiny_model_dir)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert done.stderr == ""  # no traceback, not even "Exception ignored" at exit
    assert done.returncode == 141  # 128 + SIGPIPE, as the shell reports a piped `cat`


# ------------------------------------------------------------------------------- serve


def test_serve_on_a_port_in_use_is_one_line(capsys, tiny_model_dir, busy_tcp_port):
    argv = ["serve", "--model", str(tiny_model_dir), "--port", str(busy_tcp_port)]
    assert main([*argv, "--rtp-port", "0"]) == 2
    line = one_error_line(capsys, contains=f"127.0.0.1:{busy_tcp_port}")
    assert "address already in use" in line


def test_serve_on_an_rtp_port_in_use_is_one_line(capsys, tiny_model_dir):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        argv = ["serve", "--model", str(tiny_model_dir), "--port", "0", "--rtp-port", str(port)]
        assert main(argv) == 2
    one_error_line(capsys, contains=f"RTP (UDP) on 127.0.0.1:{port}")


def test_serve_with_a_bad_model_does_not_announce_a_drain(capsys):
    assert main(["serve", "--model", "/nonexistent/model", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "draining" not in err and "stopped" not in err
    assert err.strip().splitlines()[-1].startswith("streamguard: error: no such model")


def test_demo_with_a_file_that_is_not_audio_starts_no_daemon(capsys, tiny_model_dir):
    not_audio = SPEECH.parent / "not_audio.wav"
    argv = ["demo", "--model", str(tiny_model_dir), "--file", str(not_audio), "--port", "0"]
    assert main([*argv, "--rtp-port", "0", "--once"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "Traceback" not in out.err  # no "daemon ready" banner first
    assert out.err.strip().splitlines()[-1].startswith("streamguard: error: ")


# ------------------------------------------------------------------------------- feed


@pytest.mark.parametrize(
    ("url", "contains"),
    [
        ("ws://[::1", "not a valid URL"),
        ("ws://127.0.0.1:notaport", "not a valid URL"),
        ("http://127.0.0.1:1", "ws:// or wss://"),
        ("ws://127.0.0.1:1/alerts", "alerts (subscriber) endpoint"),
    ],
)
def test_feed_bad_urls_are_one_line(capsys, url, contains):
    assert main(["feed", str(SPEECH), "--url", url]) == 2
    one_error_line(capsys, contains=contains)


def test_feed_to_a_server_that_is_not_websocket(capsys, not_websocket_server):
    url = f"ws://127.0.0.1:{not_websocket_server}"
    assert main(["feed", str(SPEECH), "--url", url]) == 2
    one_error_line(capsys, contains="cannot connect")


@pytest.mark.parametrize("speed", ["nan", "inf", "0"])
def test_feed_speed_must_be_a_finite_positive_number(capsys, speed):
    assert main(["feed", str(SPEECH), "--url", "ws://127.0.0.1:1", "--speed", speed]) == 2
    one_error_line(capsys, contains="--speed")


# ------------------------------------------------------------------------------- watch


@pytest.mark.parametrize(
    ("url", "contains"),
    [("ws://[::1", "not a valid URL"), ("ws://127.0.0.1:1/twilio", "is a feed endpoint")],
)
def test_watch_bad_urls_are_one_line(capsys, url, contains):
    assert main(["watch", url]) == 2
    one_error_line(capsys, contains=contains)


def test_watch_keeps_the_urls_own_filters_unless_a_flag_replaces_them():
    from streamguard.commands.watch import subscription_url

    url = "ws://h:1/alerts?since=0&types=call_ended"
    assert subscription_url(url, call_id=None, types=None, since=None) == url
    assert (
        subscription_url(url, call_id=None, types="alert", since=5)
        == "ws://h:1/alerts?types=alert&since=5"
    )


# ------------------------------------------------------------------------------- events


def test_events_on_a_file_that_is_not_a_database_is_one_line(capsys, tmp_path):
    garbage = tmp_path / "events.db"
    garbage.write_bytes(b"not sqlite at all\n" * 100)
    assert main(["events", "--path", str(garbage)]) == 2
    one_error_line(capsys, contains="file is not a database")


def test_events_on_another_programs_sqlite_file_is_one_line(capsys, tmp_path):
    import sqlite3

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    assert main(["events", "--path", str(other)]) == 2
    one_error_line(capsys, contains="not a streamguard event log")


# ------------------------------------------------------------------------------- scan


def test_scan_threshold_outside_0_1_is_refused(capsys, tiny_model_dir):
    argv = ["scan", "--model", str(tiny_model_dir), "--threshold", "2", str(SPEECH)]
    assert main(argv) == 2
    one_error_line(capsys, contains="--threshold")


def test_scan_unwritable_plot_fails_before_scanning(capsys, tiny_model_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    argv = ["scan", "--model", str(tiny_model_dir), "--plot", str(blocker / "x.png"), str(SPEECH)]
    assert main(argv) == 2
    out = capsys.readouterr()
    assert out.out == "" and "Traceback" not in out.err
    assert out.err.strip().splitlines()[-1].startswith("streamguard: error: --plot")


@pytest.mark.parametrize(
    ("flags", "contains"),
    [(["--hop", "0"], "--hop"), (["--min-speech", "10"], "--min-speech 10 s is longer")],
)
def test_scan_option_errors_name_the_flag(capsys, tiny_model_dir, flags, contains):
    assert main(["scan", "--model", str(tiny_model_dir), *flags, str(SPEECH)]) == 2
    one_error_line(capsys, contains=contains)


# ------------------------------------------------------------------------------- model


def test_model_export_onto_a_file_is_one_line(capsys, tiny_model_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["model", "export", str(tiny_model_dir), str(blocker)]) == 2
    one_error_line(capsys, contains="cannot write a model to")


def test_model_export_never_overwrites_a_model_without_force(capsys, tiny_model_dir, tmp_path):
    target = tmp_path / "copy"
    assert main(["model", "export", str(tiny_model_dir), str(target)]) == 0
    before = (target / "model.safetensors").read_bytes()
    assert main(["model", "export", str(tiny_model_dir), str(target), "--half"]) == 2
    one_error_line(capsys, contains="already holds a model")
    assert (target / "model.safetensors").read_bytes() == before
    assert main(["model", "export", str(tiny_model_dir), str(target), "--half", "--force"]) == 0
    assert (target / "model.safetensors").read_bytes() != before


def test_model_info_on_a_text_file_named_pth(capsys, tmp_path):
    fake = tmp_path / "weights.pth"
    fake.write_text("hello\n")
    assert main(["model", "info", str(fake)]) == 2
    one_error_line(capsys, contains="not a readable PyTorch checkpoint (KeyError")


def test_model_info_on_a_pickle_prints_only_the_error(capsys, tmp_path):
    import pickle
    import warnings

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps([1, 2], protocol=4))  # torch warns about protocol 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping to stderr would fail here
        assert main(["model", "info", str(evil)]) == 2
    one_error_line(capsys, contains="refusing to load")


# ----------------------------------------------------------------- evaluate / train / bench


@pytest.mark.parametrize(
    ("flags", "contains"),
    [(["--limit", "0"], "--limit"), (["--batch-size", "0"], "--batch-size")],
)
def test_evaluate_bad_numbers_are_refused(capsys, tiny_model_dir, flags, contains):
    argv = ["evaluate", "--model", str(tiny_model_dir), "--data", str(TRAINING / "manifest.csv")]
    assert main([*argv, *flags, "--no-progress"]) == 2
    one_error_line(capsys, contains=contains)


def test_evaluate_out_onto_a_file_fails_before_scoring(capsys, tiny_model_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    argv = ["evaluate", "--model", str(tiny_model_dir), "--data", str(TRAINING / "manifest.csv")]
    assert main([*argv, "--out", str(blocker), "--no-progress"]) == 2
    assert capsys.readouterr().out == ""


def test_train_out_onto_a_file_is_one_line(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    config = Path(__file__).resolve().parents[2] / "configs" / "train-koyelog.toml"
    argv = ["train", "--config", str(config), "--out", str(blocker), "--no-progress"]
    assert main([*argv, "--data", str(TRAINING / "manifest.csv")]) == 2
    one_error_line(capsys, contains="run folder")


def test_bench_bad_values_are_one_line(capsys, tmp_path):
    assert main(["bench", "model", "--tiny", "--batch-sizes", "1", "--repeats", "0"]) == 2
    one_error_line(capsys, contains="--repeats")
    assert main(["bench", "daemon", "--tiny", "--file", str(tmp_path / "none.wav")]) == 2
    one_error_line(capsys, contains="--file")

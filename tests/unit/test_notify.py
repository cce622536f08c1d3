"""sd_notify against real unix datagram sockets (a path one and an abstract one)."""

from __future__ import annotations

import os
import socket
import time
import uuid

import pytest

from streamguard.notify import Notifier


@pytest.fixture
def listener(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def recv(sock) -> str:
    return sock.recv(4096).decode()


def test_messages_arrive_as_single_datagrams(listener):
    path, sock = listener
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready(status="listening on 127.0.0.1:8765")
    assert recv(sock) == "READY=1\nSTATUS=listening on 127.0.0.1:8765"
    n.status("3 calls\nopen")  # a newline must not start a new assignment
    assert recv(sock) == "STATUS=3 calls open"
    n.watchdog()
    assert recv(sock) == "WATCHDOG=1"
    n.stopping()
    assert recv(sock) == "STOPPING=1"


def test_reloading_carries_monotonic_usec(listener):
    path, sock = listener
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier(path).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = recv(sock).split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after


def test_abstract_namespace_socket():
    name = f"streamguard-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        assert Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).ready()
        assert recv(sock) == "READY=1"
    finally:
        sock.close()


def test_noop_without_notify_socket():
    n = Notifier.from_env({})
    assert not n.enabled
    assert n.ready() is False and n.watchdog() is False
    assert n.watchdog_interval() is None


def test_unreachable_socket_is_not_fatal(tmp_path):
    assert Notifier(str(tmp_path / "gone.sock")).ready() is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "garbage"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(env, expected):
    assert Notifier.from_env(env).watchdog_interval() == expected


def test_a_reader_that_lags_never_blocks_the_sender(tmp_path):
    """The daemon notifies from its event loop: a full socket queue must drop, not block."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        n = Notifier(path, watchdog_usec=1_000_000)
        sent = [n.watchdog() for _ in range(500)]  # nobody reads
    assert sent[0] is True and sent[-1] is False

"""The daemon's container image, built and run for real with podman (deploy/container/).

``build.sh`` builds the image (or reuses the one built from the same source tree: it is keyed by
the tree's content hash, so a repeat run costs seconds); the test then runs it as an operator
would: tokens as files mounted read-only under /run/secrets/streamguard/, the root file system
read-only, the state directory on a named volume, host networking. From the host it streams
the bundled demo call into it with ``streamguard feed`` and the ingest token, reads the alert
from ``/alerts`` with the alerts token, starts a second call, stops the container with
``podman stop`` (SIGTERM) mid-call and checks the drain: every call that started has its
``call_ended`` (the open one with reason ``shutdown``), the container exits 0, and the event log
on the volume holds them all.

It skips only when podman cannot run at all on this machine, and never in CI (``CI`` set): there
a missing tool is a failure (scripts/system-deps.sh installs podman, runc and mmdebstrap).
Figures (build time, image size, start-up and stop times) are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from .conftest import Subscriber

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = ROOT / "deploy" / "container"
PODMAN = CONTAINER / "podman.sh"
DEMO = ROOT / "streamguard" / "demo" / "demo_call.wav"
#: A cold build (base + torch + the ONNX build) takes ~6-10 min on 2 busy cores.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def podman_problem() -> str | None:
    """Why podman cannot run containers here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/system-deps.sh installs it)"
    proc = subprocess.run([PODMAN, "info"], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return f"podman cannot run here: {last}"
    return None


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def image() -> str:
    problem = podman_problem()
    if problem is not None:
        if in_ci():
            pytest.fail(f"{problem}; CI is set, so the container test must run")
        pytest.skip(problem)
    started = time.monotonic()
    proc = subprocess.run(
        [CONTAINER / "build.sh"], capture_output=True, text=True, timeout=2400, cwd=ROOT
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, f"build.sh failed:\n{proc.stderr[-6000:]}"
    name = proc.stdout.strip().splitlines()[-1]
    size = int(podman("image", "inspect", "--format", "{{.Size}}", name).stdout.strip())
    print(f"\nimage {name}: build.sh took {elapsed:.0f} s, {size / 1e6:.0f} MB uncompressed")
    return name


@pytest.fixture
def tokens(tmp_path):
    """Two fresh tokens as files in a directory, mounted read-only where the image's config reads
    them (as a Kubernetes Secret volume is). Not podman secrets: podman 4.3 cannot mount those
    into a container whose root is read-only ("mkdir .../run/secrets/...: read-only file
    system"). Yields ({name: token}, the --volume arguments)."""
    values = {"ingest_token": secrets.token_urlsafe(24), "alerts_token": secrets.token_urlsafe(24)}
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o755)
    for name, value in values.items():
        (folder / name).write_text(value + "\n")
        (folder / name).chmod(0o644)  # readable by the image's uid 10001, rootless podman too
    folder.chmod(0o755)
    yield values, ["--volume", f"{folder}:/run/secrets/streamguard:ro"]


@pytest.fixture
def volume():
    name = f"sg-test-state-{uuid.uuid4().hex[:8]}"
    podman("volume", "create", name)
    yield name
    podman("volume", "rm", "--force", name, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def feed(port: int, call_id: str, token: str, *, speed: float):
    """``streamguard feed`` from the host, as an operator would run it."""
    env = {**os.environ, "STREAMGUARD_AUTH__INGEST_TOKEN": token}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamguard.cli",
        "feed",
        str(DEMO),
        "--url",
        f"ws://127.0.0.1:{port}",
        "--realtime",
        "--speed",
        str(speed),
        "--call-id",
        call_id,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_idle(container: str, max_seconds: float) -> subprocess.CompletedProcess:
    """The Kubernetes preStop hook (deploy/kubernetes/statefulset.yaml), run in the container."""
    return podman(
        "exec", container, "/opt/streamguard/venv/bin/python",
        "/usr/local/lib/streamguard/probe.py", "wait-idle", "--max-seconds", str(max_seconds),
        check=False,
    )  # fmt: skip


async def test_image_serves_a_call_alerts_and_drains_on_sigterm(image, tokens, volume):
    values, secret_args = tokens
    port = free_port()
    name = f"sg-test-{uuid.uuid4().hex[:8]}"
    base = f"http://127.0.0.1:{port}"
    ws = f"ws://127.0.0.1:{port}"
    # --read-only: as Kubernetes runs it (readOnlyRootFilesystem; podman adds a tmpfs /tmp).
    podman(
        "run", "--detach", "--name", name, "--network", "host", "--read-only",
        "--env", f"STREAMGUARD_SERVER__PORT={port}",
        *secret_args,
        "--volume", f"{volume}:/var/lib/streamguard",
        image,
    )  # fmt: skip
    try:
        # Ready: the model loaded, ports bound (503 while starting).
        started = time.monotonic()
        while True:
            with contextlib.suppress(OSError):
                status, body = get(f"{base}/healthz")
                if status == 200:
                    break
            state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
            if state != "running" or time.monotonic() - started > 240:
                logs = podman("logs", name, check=False)
                how = podman(
                    "inspect", "--format",
                    "exit {{.State.ExitCode}} oom {{.State.OOMKilled}} {{.State.Error}}", name,
                    check=False,
                ).stdout.strip()  # fmt: skip
                pytest.fail(f"not ready ({state}, {how}):\n{(logs.stdout + logs.stderr)[-4000:]}")
            await asyncio.sleep(0.5)
        print(f"\nready {time.monotonic() - started:.1f} s after podman run")
        # Without the token /healthz says only its status; the guarded surfaces refuse.
        assert json.loads(body) == {"status": "ready"}
        assert get(f"{base}/metrics")[0] == 401
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{ws}/alerts"):
                pass
        assert refused.value.response.status_code == 401
        status, body = get(f"{base}/healthz", values["alerts_token"])
        health = json.loads(body)
        assert health["model"] == "streamguard-starter" and health["device"] == "cpu", health
        print(f"serving backend: {health['backend']}")
        # The image's HEALTHCHECK (the daemon's own config: port from the environment).
        assert podman("healthcheck", "run", name, check=False).returncode == 0

        async with Subscriber(f"{ws}/alerts", token=values["alerts_token"]) as sub:
            # 1. The bundled demo call (a synthetic caller on inbound), at twice real time.
            proc = await feed(port, "ctr-demo", values["ingest_token"], speed=2.0)
            _, err = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode == 0, err.decode()
            await sub.wait_for(lambda _: sub.of_type("call_ended", "ctr-demo"), 30)
            raised = [a for a in sub.of_type("alert", "ctr-demo") if a["state"] == "raised"]
            assert raised and raised[0]["track"] == "inbound", sub.of_type("alert")
            (ended,) = sub.of_type("call_ended", "ctr-demo")
            assert ended["reason"] == "stop" and ended["summary"]["verdict"] == "fake", ended
            # Kubernetes' preStop: no call open, so it returns at once.
            idle = await asyncio.to_thread(wait_idle, name, 60)
            assert idle.returncode == 0 and idle.stdout == "", idle

            # 2. A second call, open and scoring when the container is stopped.
            proc = await feed(port, "ctr-drain", values["ingest_token"], speed=1.0)
            await sub.wait_for(lambda _: sub.of_type("score", "ctr-drain"), 60)
            # preStop with a call open: it waits (here 2 s), then leaves the rest to SIGTERM.
            busy = await asyncio.to_thread(wait_idle, name, 2)
            assert busy.returncode == 0 and "1 call(s) still open" in busy.stdout, busy
            stop_started = time.monotonic()
            stop = await asyncio.create_subprocess_exec(
                str(PODMAN), "stop", "--time", "60", name,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            _, stop_err = await asyncio.wait_for(stop.communicate(), 90)
            stop_seconds = time.monotonic() - stop_started
            assert stop.returncode == 0, stop_err.decode()
            await asyncio.wait_for(proc.communicate(), 30)  # the daemon closed the feed (1001)
            await sub.wait_for(lambda _: sub.of_type("call_ended", "ctr-drain"), 10)
        print(f"podman stop (SIGTERM, drain) took {stop_seconds:.1f} s")

        (drained,) = sub.of_type("call_ended", "ctr-drain")
        assert drained["reason"] == "shutdown", drained
        started_ids = {e["call_id"] for e in sub.of_type("call_started")}
        ended_ids = {e["call_id"] for e in sub.of_type("call_ended")}
        assert started_ids == ended_ids == {"ctr-demo", "ctr-drain"}
        state = podman("inspect", "--format", "{{.State.ExitCode}} {{.State.OOMKilled}}", name)
        assert state.stdout.split() == ["0", "false"], "the drain did not exit 0"
        logs = podman("logs", name)
        logs = logs.stdout + logs.stderr
        assert '"event": "draining"' in logs and '"event": "stopped"' in logs

        # 3. The event log lives on the volume: a fresh container reads what the first committed.
        events = podman(
            "run", "--rm", "--network", "host", "--volume", f"{volume}:/var/lib/streamguard",
            image, "events", "--json", "--types", "call_started,alert,call_ended",
        ).stdout  # fmt: skip
        logged = [json.loads(line) for line in events.splitlines() if line.strip()]
        seen = [e for e in sub.events if e["type"] in ("call_started", "alert", "call_ended")]
        assert [e["seq"] for e in logged] == [e["seq"] for e in seen]
        assert {e["call_id"] for e in logged if e["type"] == "call_ended"} == ended_ids
    finally:
        podman("rm", "--force", "--time", "5", name, check=False)

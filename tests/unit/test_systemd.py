"""The systemd unit verifies with systemd's own checker; install.sh parses."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD / "streamguard.service"


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+)=(.*)$", line)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    # verify insists that ExecStart exists: check a copy pointing at a binary that does.
    text = UNIT.read_text().replace(
        "ExecStart=/opt/streamguard/.venv/bin/streamguard", "ExecStart=/bin/true"
    )
    assert "ExecStart=/bin/true serve --config" in text
    unit = tmp_path / "streamguard.service"
    unit.write_text(text)
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    # unknown keys are only warnings ("Unknown key ..., ignoring"): treat them as failures
    assert "ignoring" not in proc.stderr and "Unknown" not in proc.stderr, proc.stderr


def test_unit_contract():
    d = directives(UNIT.read_text())
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert d["ExecStart"] == [
        "/opt/streamguard/.venv/bin/streamguard serve --config /etc/streamguard/streamguard.toml"
    ]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["User"] == ["streamguard"] and "WatchdogSec" in d
    assert "PrivateDevices" not in d  # it would hide /dev/snd and the GPU
    assert d["DevicePolicy"] == ["closed"] and "char-alsa rw" in d["DeviceAllow"]
    assert d["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]


def test_sysusers_declares_the_unit_user():
    text = (SYSTEMD / "streamguard.sysusers").read_text()
    assert re.search(r"^u streamguard ", text, re.M)
    assert re.search(r"^m streamguard audio$", text, re.M)


def test_install_script_parses():
    subprocess.run(["sh", "-n", str(SYSTEMD / "install.sh")], check=True, timeout=10)

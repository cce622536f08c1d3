"""The systemd unit verifies with systemd's own checker, keeps its hardening (issue #21 finding 9:
exposure at or below 1.3 by `systemd-analyze security --offline`), and install.sh parses."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD / "streamguard.service"
MICROPHONE = SYSTEMD / "microphone.conf"


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+)=(.*)$", line)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("microphone", [False, True], ids=["plain", "microphone"])
def test_unit_passes_systemd_analyze_verify(tmp_path, microphone):
    unit = checkable_unit(tmp_path, microphone=microphone)
    assert "ExecStart=/bin/true serve --config" in unit.read_text()
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    # unknown keys are only warnings ("Unknown key ..., ignoring"): treat them as failures
    assert "ignoring" not in proc.stderr and "Unknown" not in proc.stderr, proc.stderr


def checkable_unit(tmp_path, *, microphone: bool = False) -> Path:
    """A copy of the unit pointing at a binary that exists (verify insists), with the
    microphone drop-in beside it when asked (systemd-analyze reads <unit>.d/ next to it)."""
    text = UNIT.read_text().replace(
        "ExecStart=/opt/streamguard/.venv/bin/streamguard", "ExecStart=/bin/true"
    )
    unit = tmp_path / "streamguard.service"
    unit.write_text(text)
    if microphone:
        dropins = tmp_path / "streamguard.service.d"
        dropins.mkdir()
        (dropins / "microphone.conf").write_text(MICROPHONE.read_text())
    return unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("microphone", [False, True], ids=["plain", "microphone"])
def test_exposure_stays_at_or_below_1_3(tmp_path, microphone):
    """Issue #21 finding 9 measured 1.9 (systemd-analyze security --offline); the gaps it
    listed are closed, with the microphone drop-in too."""
    unit = checkable_unit(tmp_path, microphone=microphone)
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", unit.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    if "--offline" in proc.stderr and "unrecognized" in proc.stderr:
        pytest.skip("this systemd-analyze has no --offline")
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    assert float(found.group(1)) <= 1.3, proc.stdout
    assert ("SupplementaryGroups=" in _failing(proc.stdout)) is microphone


def _failing(report: str) -> str:
    return "\n".join(line for line in report.splitlines() if line.startswith("\u2717"))


def test_unit_contract():
    d = directives(UNIT.read_text())
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert d["ExecStart"] == [
        "/opt/streamguard/.venv/bin/streamguard serve --config /etc/streamguard/streamguard.toml"
    ]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["User"] == ["streamguard"] and "WatchdogSec" in d
    assert "PrivateDevices" not in d  # it would hide the GPU
    assert d["DevicePolicy"] == ["closed"]
    assert d["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]


def test_unit_closes_the_gaps_of_issue_21():
    d = directives(UNIT.read_text())
    # audio access only through the microphone drop-in
    assert "SupplementaryGroups" not in d and "char-alsa rw" not in d["DeviceAllow"]
    mic = directives(MICROPHONE.read_text())
    assert mic == {"SupplementaryGroups": ["audio"], "DeviceAllow": ["char-alsa rw"]}
    assert (d["IPAddressDeny"], d["IPAddressAllow"]) == (["any"], ["localhost"])
    assert d["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert d["RemoveIPC"] == ["yes"] and d["ProcSubset"] == ["pid"]
    assert d["StateDirectoryMode"] == ["0700"] and d["UMask"] == ["0077"]
    # credentials through LoadCredential=, read through the *_file twins
    assert d["LoadCredential"] == [
        "ingest_token:/etc/streamguard/secrets/ingest_token",
        "alerts_token:/etc/streamguard/secrets/alerts_token",
    ]
    assert "STREAMGUARD_AUTH__INGEST_TOKEN_FILE=%d/ingest_token" in d["Environment"]
    assert "STREAMGUARD_AUTH__ALERTS_TOKEN_FILE=%d/alerts_token" in d["Environment"]


def test_install_script_makes_the_credentials_and_the_microphone_drop_in():
    text = (SYSTEMD / "install.sh").read_text()
    assert "--microphone" in text and "microphone.conf" in text
    assert "/etc/streamguard/secrets/$name" in text and "install -d -m 0700" in text
    assert "gpasswd -d streamguard audio" in text  # an earlier install's membership


def test_sysusers_declares_the_unit_user():
    text = (SYSTEMD / "streamguard.sysusers").read_text()
    assert re.search(r"^u streamguard ", text, re.M)
    assert not re.search(r"^m ", text, re.M)  # no group memberships: the drop-in adds audio


def test_install_script_parses():
    subprocess.run(["sh", "-n", str(SYSTEMD / "install.sh")], check=True, timeout=10)

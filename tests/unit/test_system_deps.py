"""A missing system package fails a CI run instead of leaving it green with tests skipped:
scripts/system-deps.sh exits non-zero under CI=true when it cannot install, and
``require_tool`` (tests/conftest.py) fails the tests that drive a missing tool there."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "system-deps.sh"


def test_a_missing_tool_skips_on_a_workstation_and_fails_in_ci(monkeypatch):
    require_tool("sh")  # present: nothing happens
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-tool-x not installed"):
        require_tool("no-such-tool-x")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI: no-such-tool-x not installed"):
        require_tool("sh", "no-such-tool-x")


@pytest.fixture
def no_root_no_sudo(tmp_path) -> dict[str, str]:
    """A PATH holding only an ``id`` that says uid 1000 and a ``dpkg`` that knows no package:
    a user without root or sudo on a machine that has none of the packages."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("id", "echo 1000"), ("dpkg", "exit 1")):
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(0o755)
    return {"PATH": str(bin_dir)}


@pytest.mark.parametrize(("ci", "code"), [(None, 0), ("true", 1)])
def test_system_deps_without_root_fails_only_in_ci(no_root_no_sudo, ci, code):
    env = dict(no_root_no_sudo, **({"CI": ci} if ci else {}))
    done = subprocess.run(
        ["/bin/bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == code, done.stderr
    assert "system-deps: missing ffmpeg" in done.stderr and "chromium-driver" in done.stderr

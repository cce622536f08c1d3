"""The suite's hypothesis profile (tests/conftest.py) is the one every property test runs
under: no per-test deadline or health-check overrides that could drift from it."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, settings

TESTS = Path(__file__).resolve().parents[1]


def test_the_profile_is_loaded_without_a_deadline():
    assert settings.default.deadline is None
    assert HealthCheck.too_slow in settings.default.suppress_health_check


def test_no_test_overrides_the_deadline_or_health_checks():
    override = re.compile(r"settings\([^)]*\b(deadline|suppress_health_check)\s*=")
    offenders = [
        str(p.relative_to(TESTS))
        for p in TESTS.rglob("*.py")
        if p.name != "conftest.py" and p != Path(__file__) and override.search(p.read_text())
    ]
    assert not offenders, f"set it in the profile (tests/conftest.py), not in {offenders}"

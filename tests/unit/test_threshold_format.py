"""One rule for showing a threshold (``format_threshold``: three decimals), on every surface
that prints one: ``watch``/``demo``/``events`` lines, ``model info``, ``scan`` reports, the
dashboard's script and the docs that quote the bundled model's threshold."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from streamguard.cli import main
from streamguard.commands.watch import format_event
from streamguard.policy.verdict import THRESHOLD_DIGITS, format_threshold

ROOT = Path(__file__).resolve().parents[2]
SPEECH = ROOT / "tests" / "fixtures" / "speech_10s_8k.wav"
ODD = 0.8949165344238281  # the bundled model's: 0.895, never 0.89 or 0.8949


def test_the_rule():
    assert format_threshold(ODD) == "0.895" and format_threshold(0.5) == "0.500"


@pytest.fixture(scope="module")
def odd_model_dir(tiny_detector, tiny_model_params, tmp_path_factory) -> Path:
    from streamguard.model import save_model_dir

    directory = tmp_path_factory.mktemp("models") / "odd"
    info = tiny_detector.info.replace(threshold=ODD)
    save_model_dir(directory, tiny_detector.module, info, tiny_model_params)
    return directory


def test_alert_lines():
    line = format_event(
        {"type": "alert", "ts": "2026-01-01T00:00:00.000Z", "call_id": "c", "track": "inbound",
         "state": "raised", "smoothed": 0.97, "threshold": ODD, "start": 0.0, "end": 6.0}
    )  # fmt: skip
    assert "threshold=0.895 " in line


def test_model_info(capsys, odd_model_dir):
    assert main(["model", "info", str(odd_model_dir)]) == 0
    (row,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("threshold:")]
    assert row.split() == ["threshold:", "0.895"]
    assert main(["model", "info", str(odd_model_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["threshold"] == ODD  # JSON keeps every digit


def test_scan_report(capsys, odd_model_dir):
    assert main(["scan", "--model", str(odd_model_dir), "--device", "cpu", str(SPEECH)]) == 0
    out = capsys.readouterr().out
    assert "threshold 0.895)" in out and "0.89)" not in out


def test_dashboard_uses_the_same_digits():
    static = ROOT / "streamguard" / "dashboard" / "static"
    chart = (static / "chart.js").read_text()
    app = (static / "app.js").read_text()
    assert f"export const THRESHOLD_DIGITS = {THRESHOLD_DIGITS};" in chart
    assert ".toFixed(2)" not in chart  # the on/off labels
    # every threshold the page prints goes through fmtThreshold
    for name in ("model.threshold", "sm.on_threshold", "sm.off_threshold", "a.threshold"):
        assert f"fmtThreshold({name})" in app and f"fmt({name}" not in app


@pytest.mark.parametrize("tier", ["starter", "accurate"])
def test_docs_quote_the_bundled_threshold_by_the_rule(tier):
    """Where a doc quotes a bundled model's threshold, it is the rule's three decimals (0.895,
    never 0.89 or 0.8949); a score that happens to be close (``smoothed=0.89``) is not one."""
    folder = ROOT / "streamguard" / "models" / tier
    value = json.loads((folder / "config.json").read_text())["threshold"]
    shown = format_threshold(value)
    texts = {
        p: p.read_text()
        for p in [ROOT / "README.md", folder / "MODEL_CARD.md", *(ROOT / "docs").glob("*.md")]
    }
    assert shown in texts[ROOT / "README.md"]
    quoted = re.compile(r"threshold[^0-9\n|]{0,24}?(\d\.\d+)")
    for path, text in texts.items():
        wrong = [m.group(1) for m in quoted.finditer(text)
                 if abs(float(m.group(1)) - value) < 0.01 and m.group(1) != shown]  # fmt: skip
        assert not wrong, f"{path.name} shows the {tier} threshold as {wrong}, not {shown}"

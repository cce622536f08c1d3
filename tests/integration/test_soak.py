"""``streamguard bench soak`` end to end, for seconds instead of half an hour (the smoke test;
recorded soaks are in benchmarks/README.md)."""

from __future__ import annotations

import json

import pytest

from streamguard.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_soak_churns_calls_and_reports_memory_fds_drops_and_lag(capsys, fixtures_dir):
    args = "bench soak --tiny --calls 3 --minutes 0.12 --call-seconds 2,3 --sample-seconds 1"
    speech = str(fixtures_dir / "speech_10s_8k.wav")
    code = main([*args.split(), "--file", speech, "--json", "--quiet"])
    assert code == 0
    soak = json.loads(capsys.readouterr().out)["soak"]
    client = soak["client"]
    assert client["calls_started"] >= 6  # churn: each slot started a second call at least
    assert client["error_count"] == 0
    assert client["call_ended_events"] == client["calls_started"]
    assert soak["rss_end_mib"] > 0 and soak["fds_end"] > 0
    assert soak["windows_scored"] > 0 and soak["windows_failed"] == 0
    assert len(soak["samples"]) >= 5
    assert {"rss_growth_percent", "fds_max", "engine_lag_ms_worst_interval"} <= set(soak)


def test_soak_refuses_nonsense_in_one_line(capsys):
    assert main(["bench", "soak", "--tiny", "--call-seconds", "9,3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("streamguard: error: --call-seconds") and "\n" not in err

"""The allow-list's store and rule (pure apart from its folder) and the engine step that marks
enrolled voices, with embeddings made up to sit at known angles."""

from __future__ import annotations

import json
import os
import stat
from types import SimpleNamespace

import numpy as np
import pytest

from streamguard.allowlist import AllowList, AllowListError, cosine
from streamguard.allowlist.checker import AllowlistChecker
from streamguard.scoring.outcome import Allowlisted, Unscored


def at_angle(base: np.ndarray, other: np.ndarray, similarity: float) -> np.ndarray:
    """A unit vector whose cosine to ``base`` is ``similarity`` (``other`` orthogonal)."""
    return similarity * base + np.sqrt(1 - similarity**2) * other


E = np.eye(8, dtype=np.float32)


def test_enrol_match_and_reload(tmp_path):
    allow = AllowList(tmp_path / "allow", threshold=0.8, encoder="enc")
    allow.add("ivr-main", [at_angle(E[0], E[1], 0.95), at_angle(E[0], E[2], 0.95)], ["a", "b"])
    path = tmp_path / "allow" / "ivr-main.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text())["encoder"] == "enc"
    assert allow.match(at_angle(E[0], E[3], 0.9)).name == "ivr-main"
    assert allow.match(at_angle(E[0], E[3], 0.5)) is None
    again = AllowList(tmp_path / "allow", threshold=0.8, encoder="enc")
    assert set(again.voices) == {"ivr-main"} and again.voices["ivr-main"].clips == ("a", "b")
    # the best voice wins
    allow.add("voicemail", [E[4]], ["c"])
    assert allow.match(at_angle(E[4], E[0], 0.99)).name == "voicemail"
    allow.remove("ivr-main")
    assert set(AllowList(tmp_path / "allow").voices) == {"voicemail"}


def test_bad_names_files_and_encoders_are_one_line(tmp_path):
    allow = AllowList(tmp_path, encoder="enc")
    for name in ("../x", "", "a/b", ".hidden", "x" * 65):
        with pytest.raises(AllowListError, match="voice name"):
            allow.add(name, [E[0]], ["a"])
    with pytest.raises(AllowListError, match="no enrolled voice"):
        allow.remove("nobody")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(AllowListError, match="unreadable"):
        AllowList(tmp_path)
    (tmp_path / "broken.json").unlink()
    allow.add("v", [E[0]], ["a"])
    with pytest.raises(AllowListError, match="enrol the voice again"):
        AllowList(tmp_path, encoder="another-encoder")


def test_the_engine_step_marks_only_checked_matching_windows(tmp_path):
    allow = AllowList(tmp_path, threshold=0.8, encoder="enc")
    allow.add("ivr", [E[0]], ["a"])
    voices = {1: at_angle(E[0], E[1], 0.9), 2: E[5], 3: E[0]}

    class Encoder:  # stands in for Resemblyzer: each window says whose voice it is
        def embed(self, samples):
            return voices[int(samples[0])]

    checker = AllowlistChecker(allow, Encoder(), min_p_fake=0.3)
    windows = [SimpleNamespace(samples=np.array([k], np.float32)) for k in (1, 2, 3, 1)]
    out = checker(windows, [0.9, 0.9, 0.1, Unscored("error")])
    assert out[0] == Allowlisted(0.9, "ivr", pytest.approx(0.9, abs=1e-3))
    assert out[1] == 0.9  # another voice: scored as usual
    assert out[2] == 0.1  # below min_p_fake: not even checked
    assert out[3] == Unscored("error")
    assert (checker.checked, checker.matched) == (2, 1)
    assert cosine(E[0], E[0]) == pytest.approx(1.0)

"""The config schema: the shipped TOML equals the defaults; errors are one line; env works."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from streamguard.config import RELOADABLE_SECTIONS, Settings, apply_reload, load_config
from streamguard.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[2] / "configs" / "streamguard.toml"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.upper().startswith("STREAMGUARD_"):
            monkeypatch.delenv(name)


def _leaves(d, prefix=""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from _leaves(v, key + ".")
        else:
            yield key, v


def test_shipped_config_equals_defaults():
    assert load_config(SHIPPED).model_dump() == load_config(None).model_dump()


def test_shipped_config_mentions_every_key():
    """Keys with a value must be set; None-valued keys must appear commented out."""
    text = SHIPPED.read_text()
    in_file = dict(_leaves(tomllib.loads(text)))
    for key, value in _leaves(load_config(None).model_dump()):
        if value is None:
            name = key.rsplit(".", 1)[-1]
            assert re.search(rf"^# {name} = ", text, re.M), f"{key} missing (commented)"
        else:
            assert key in in_file, f"{key} missing"


def test_every_set_key_has_a_comment_above_it():
    lines = SHIPPED.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\w+ = ", line):
            above = lines[i - 1]
            # a key directly under a table header or a commented key/group is fine
            assert above.startswith(("#", "[")) or re.match(r"^\w+ = ", above), line


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("bogus = 1\n", "bogus: unknown key"),
        ("[smoothing]\nraise_afer = 3\n", "smoothing.raise_afer: unknown key"),
        ("[sources.rtp]\nprot = 1\n", "sources.rtp.prot: unknown key"),
        ("[server]\nport = 'abc'\n", "server.port: "),
        ("[server]\nport = 70000\n", "server.port: "),
        ("[logging]\nlevel = 'loud'\n", "logging.level: "),
        ("[alerts]\npath = '/twilio'\n", "already used"),
        ("[alerts]\npath = 'alerts'\n", "alerts: "),
        ("[sources.rtp.payload_types.200]\nencoding='pcmu'\nrate=8000\n", "0..127"),
        ("[smoothing]\non_threshold = 0.3\noff_threshold = 0.5\n", "smoothing: "),
        ("[server\n", "not valid TOML"),
    ],
)
def test_errors_are_one_clear_line(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert message.startswith(str(path))


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_env_overrides_file_and_overrides_beat_env(tmp_path, monkeypatch):
    path = write(tmp_path, "[server]\nport = 9000\nhost = '0.0.0.0'\n")
    monkeypatch.setenv("STREAMGUARD_SERVER__PORT", "9100")
    monkeypatch.setenv("STREAMGUARD_SOURCES__RTP__ENABLED", "false")
    monkeypatch.setenv("STREAMGUARD_SMOOTHING__ON_THRESHOLD", "0.8")
    s = load_config(path)
    assert (s.server.host, s.server.port) == ("0.0.0.0", 9100)
    assert s.sources.rtp.enabled is False
    assert s.smoothing.on_threshold == 0.8
    s2 = load_config(path, {"server": {"port": 1234}})
    assert (s2.server.host, s2.server.port) == ("0.0.0.0", 1234)


def test_env_errors_name_the_variable(monkeypatch):
    monkeypatch.setenv("STREAMGUARD_SERVER__PORT", "abc")
    with pytest.raises(ConfigError, match=r"^environment STREAMGUARD_SERVER__PORT: server\.port"):
        load_config(None)
    monkeypatch.delenv("STREAMGUARD_SERVER__PORT")
    monkeypatch.setenv("STREAMGUARD_SERVER__BOGUS", "1")
    with pytest.raises(ConfigError, match=r"server\.bogus: unknown key"):
        load_config(None)


def test_token_is_secret_and_never_echoed(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMGUARD_AUTH__TOKEN", "s3cret-value")
    s = load_config(None)
    assert s.auth.token_value() == "s3cret-value"
    assert "s3cret" not in repr(s) and "s3cret" not in str(s.model_dump())
    path = write(tmp_path, "[auth]\ntoken = 12345\n")
    monkeypatch.delenv("STREAMGUARD_AUTH__TOKEN")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "12345" not in str(info.value)


def test_rtp_payload_types_table():
    path_text = "[sources.rtp.payload_types.97]\nencoding = 'pcmu'\nrate = 8000\n"
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        s = load_config(write(Path(d), path_text))
    assert s.sources.rtp.payload_types["97"].encoding == "pcmu"
    assert "96" not in s.sources.rtp.payload_types  # a table replaces the default mapping


def test_reload_takes_only_reloadable_sections():
    current = load_config(None)
    new = load_config(
        None,
        {"smoothing": {"raise_after": 7}, "server": {"port": 1}, "logging": {"level": "debug"}},
    )
    merged, ignored = apply_reload(current, new)
    assert merged.smoothing.raise_after == 7 and merged.logging.level == "debug"
    assert merged.server.port == current.server.port
    assert ignored == ["server"]
    assert set(current.reloadable()) == set(RELOADABLE_SECTIONS)


def test_protected_paths_follow_configured_paths():
    s = Settings(alerts={"path": "/a"}, sources={"ingest": {"path": "/in"}})
    assert s.protected_paths() == {"/a", "/in"}

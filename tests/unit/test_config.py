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
        elif value == [] and key not in in_file:  # an array of tables, shown commented
            assert re.search(rf"^# \[\[{key}\]\]$", text, re.M), f"[[{key}]] missing"
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


def test_a_removed_key_says_why(tmp_path):
    with pytest.raises(ConfigError, match=r"track\.window_seconds: unknown key \(removed: .*model"):
        load_config(write(tmp_path, "[track]\nwindow_seconds = 4.0\n"))


async def test_daemon_refuses_min_speech_longer_than_the_models_window(tiny_detector):
    from streamguard.daemon import Daemon
    from streamguard.errors import StreamguardError

    settings = load_config(
        None,
        {
            "server": {"port": 0},
            "sources": {"rtp": {"enabled": False}},
            "track": {"min_speech_seconds": 5.0},
        },
    )
    daemon = Daemon(settings, detector=tiny_detector)
    try:
        with pytest.raises(StreamguardError, match="longer than the model's 4 s window"):
            await daemon.start()
    finally:
        await daemon.stop()


def test_configured_rates_are_the_ones_every_source_accepts():
    """docs/sources.md "Limits": 8000-64000 Hz, RTP payload types and the microphone too."""
    from streamguard.sources.base import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE

    assert (MIN_SAMPLE_RATE, MAX_SAMPLE_RATE) == (8000, 64000)
    pt = {"encoding": "pcm_s16be"}
    for rate, ok in [(8000, True), (48000, True), (64000, True), (7999, False), (64001, False)]:
        rtp = {"sources": {"rtp": {"payload_types": {"97": {**pt, "rate": rate}}}}}
        mic = {"sources": {"mic": {"sample_rate": rate}}}
        for overrides in (rtp, mic):
            if ok:
                load_config(None, overrides)
            else:
                with pytest.raises(ConfigError, match="rate"):
                    load_config(None, overrides)


# ---------------------------------------------------------------- [sources.audiohook]

_SECRET = "TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU="


def test_audiohook_needs_a_key_when_enabled_and_never_echoes_secrets(tmp_path):
    with pytest.raises(ConfigError, match=r"sources\.audiohook: .*api_key"):
        load_config(write(tmp_path, "[sources.audiohook]\nenabled = true\n"))
    text = "[sources.audiohook]\nenabled = true\napi_key = 'k'\nclient_secret = 'not base64!'\n"
    with pytest.raises(ConfigError, match="base64") as info:
        load_config(write(tmp_path, text))
    assert "not base64!" not in str(info.value)
    text = "[sources.audiohook]\napi_key = 'k'\napi_key_file = '/x'\n"
    with pytest.raises(ConfigError, match="not both"):
        load_config(write(tmp_path, text))


def test_audiohook_credentials_from_files_and_environment(tmp_path, monkeypatch):
    key, secret = tmp_path / "key", tmp_path / "secret"
    key.write_text("SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh\n")
    secret.write_text(_SECRET + "\n")
    text = f"[sources.audiohook]\nenabled = true\napi_key_file = '{key}'\n"
    text += f"client_secret_file = '{secret}'\n"
    cfg = load_config(write(tmp_path, text)).sources.audiohook
    assert cfg.api_key_value() == "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh"
    assert cfg.client_secret_bytes() == b"MySuperSecretKeyTellNo-1!2@3#4$5"
    key.unlink()
    with pytest.raises(ConfigError, match=r"cannot read sources\.audiohook\.api_key_file"):
        cfg.api_key_value()
    monkeypatch.setenv("STREAMGUARD_SOURCES__AUDIOHOOK__ENABLED", "true")
    monkeypatch.setenv("STREAMGUARD_SOURCES__AUDIOHOOK__API_KEY", "from-env")
    cfg = load_config(None).sources.audiohook
    assert cfg.enabled and cfg.api_key_value() == "from-env" and cfg.client_secret_bytes() is None
    assert "from-env" not in repr(cfg)


def test_audiohook_path_must_not_clash():
    with pytest.raises(ConfigError, match="already used"):
        load_config(None, {"sources": {"audiohook": {"path": "/ingest"}}})


def test_audiosocket_beyond_loopback_needs_an_allow_list():
    sources = {"audiosocket": {"enabled": True, "host": "0.0.0.0"}}
    with pytest.raises(ConfigError, match="no authentication"):
        load_config(None, {"sources": sources})
    sources["audiosocket"]["allow"] = ["10.0.0.5", "10.1.0.0/24"]
    assert load_config(None, {"sources": sources}).sources.audiosocket.allow[1] == "10.1.0.0/24"
    sources["audiosocket"]["allow"] = ["asterisk.example"]
    with pytest.raises(ConfigError, match="not an IP address"):
        load_config(None, {"sources": sources})
    assert load_config(None, {"sources": {"audiosocket": {"enabled": True}}}).sources.audiosocket


@pytest.mark.parametrize(
    ("kvs", "fragment"),
    [
        ({"region": "Europe"}, "not an AWS region name"),
        ({"endpoint_url": "vpce.example:443"}, "endpoint_url must be an http"),
        ({"max_streams": 0}, "max_streams"),
        ({"idle_timeout_seconds": 0}, "idle_timeout_seconds"),
        ({"access_key_id": "AKIA..."}, "unknown key"),  # credentials never go in the config
    ],
)
def test_kvs_settings_are_checked(kvs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(None, {"sources": {"kvs": kvs}})


def test_kvs_settings_accept_regions_and_vpc_endpoints():
    kvs = load_config(
        None,
        {"sources": {"kvs": {"enabled": True, "region": "us-gov-west-1",
                             "endpoint_url": "https://vpce-1.kinesisvideo.eu-west-2.vpce.amazonaws.com"}}},
    ).sources.kvs  # fmt: skip
    assert kvs.enabled and kvs.region == "us-gov-west-1" and kvs.max_streams == 100


def test_acs_beyond_loopback_needs_the_ingest_token_and_its_own_path():
    beyond = {"server": {"host": "0.0.0.0"}, "sources": {"acs": {"enabled": True}}}
    with pytest.raises(ConfigError, match=r"sources\.acs: /acs beyond loopback needs"):
        load_config(None, {**beyond, "auth": {"alerts_token": "a"}})
    settings = load_config(None, {**beyond, "auth": {"ingest_token": "i", "alerts_token": "a"}})
    assert settings.sources.acs.path == "/acs"
    with pytest.raises(ConfigError, match="already used"):
        load_config(None, {"sources": {"acs": {"path": "/twilio"}}})
    with pytest.raises(ConfigError, match="max_participants"):
        load_config(None, {"sources": {"acs": {"max_participants": 0}}})


def test_guarded_paths_follow_configured_paths():
    from streamguard.server.access import AccessPolicy

    s = Settings(
        alerts={"path": "/a"}, sources={"ingest": {"path": "/in"}, "twilio": {"path": "/tw"}}
    )
    assert set(AccessPolicy.from_settings(s).guards) == {
        "/a",
        "/in",
        "/tw",
        "/metrics",
        "/api/",  # every other /api route, one guard
        "/api/kvs/streams",  # the feeds' token: the Connect Lambda starts a call's audio
    }
    guards = AccessPolicy.from_settings(s).guards
    assert guards["/api/kvs/streams"].surface == "ingest" and guards["/api/"].surface == "alerts"


@pytest.mark.parametrize(
    "name", ["STREAMGUARD_SEVRER__PORT", "STREAMGUARD_BOGUS", "streamguard_authh__token"]
)
def test_an_environment_variable_naming_no_section_is_an_error(monkeypatch, name):
    monkeypatch.setenv(name, "1")
    with pytest.raises(ConfigError) as info:
        load_config(None)
    message = str(info.value)
    assert message.startswith(f"environment {name}: unknown section") and "\n" not in message


def test_unknown_key_in_a_known_section_from_the_environment_is_an_error_too(monkeypatch):
    monkeypatch.setenv("STREAMGUARD_SERVER__PORTT", "1")
    with pytest.raises(ConfigError, match=r"environment STREAMGUARD_SERVER__PORTT: server\.portt"):
        load_config(None)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"server": {"tls_cert": "/c.pem"}}, "tls_cert and tls_key go together"),
        ({"sources": {"rtp": {"allow": ["10.0.0.0/33"]}}}, "not a network"),
        ({"sources": {"rtp": {"max_ssrcs_per_sender": 0}}}, "max_ssrcs_per_sender"),
        ({"limits": {"handshake_timeout_seconds": 0}}, "handshake_timeout_seconds"),
    ],
)
def test_edge_settings_are_checked(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(None, overrides)


def test_twilio_auth_token_is_never_echoed(tmp_path):
    path = write(tmp_path, "[sources.twilio]\nauth_token = 12345678\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "12345678" not in str(info.value)


def test_shipped_config_shows_every_webhook_key():
    from streamguard.config import WebhookSettings

    text = SHIPPED.read_text()
    for name in WebhookSettings.model_fields:
        assert re.search(rf"^# {name} = ", text, re.M), f"webhooks.{name} missing (commented)"


def test_webhook_entries_are_checked(tmp_path):
    ok = write(tmp_path, '[[webhooks]]\nurl = "http://127.0.0.1:9/h"\nsecret = "s3cr3t"\n')
    (hook,) = load_config(ok).webhooks
    assert hook.secret_value() == "s3cr3t" and hook.label == "127.0.0.1:9/h"
    both = write(
        tmp_path, '[[webhooks]]\nurl = "http://h/x"\nsecret = "zz-top"\nsecret_file = "f"\n'
    )
    with pytest.raises(ConfigError, match="exactly one") as err:
        load_config(both)
    assert "zz-top" not in str(err.value)
    with pytest.raises(ConfigError, match="unknown event type"):
        load_config(
            write(tmp_path, '[[webhooks]]\nurl = "http://h/x"\nsecret = "s"\ntypes = ["bogus"]\n')
        )
    with pytest.raises(ConfigError, match="http"):
        load_config(write(tmp_path, '[[webhooks]]\nurl = "ftp://h/x"\nsecret = "s"\n'))


def _variables_the_commands_read() -> set[str]:
    """Every ``STREAMGUARD_*`` name the product reads with ``os.environ.get``."""
    import re

    root = Path(__file__).resolve().parents[2]
    pattern = re.compile(r"os\.environ\.get\(\s*\"(STREAMGUARD_[A-Z0-9_]+)\"")
    names: set[str] = set()
    for folder in ("streamguard", "training"):
        for source in (root / folder).rglob("*.py"):
            names.update(pattern.findall(source.read_text(encoding="utf-8")))
    return names


def test_no_variable_a_command_reads_stops_the_daemons_config(monkeypatch, tmp_path):
    """``streamguard webhook verify --help`` says to export STREAMGUARD_WEBHOOK_SECRET; the same
    shell then runs ``serve``/``events``: the config must not read it as a section."""
    names = _variables_the_commands_read()
    assert {"STREAMGUARD_WEBHOOK_SECRET", "STREAMGUARD_CACHE_DIR"} <= names
    for name in names:
        monkeypatch.setenv(name, str(tmp_path) if name.endswith("_DIR") else "a-value")
    config = tmp_path / "c.toml"
    config.write_text("[server]\nport = 0\n")
    assert load_config(config).server.port == 0


@pytest.mark.parametrize("override", ["environment", "flag"])
def test_a_wrong_type_in_the_file_stops_it_even_when_overridden(monkeypatch, tmp_path, override):
    """docs/operations.md: a wrong type in the file stops the daemon. The merged settings never
    see a value an override replaced, so the file is checked on its own first."""
    config = tmp_path / "c.toml"
    config.write_text('[server]\nport = "abc"\n[smoothing]\nraise_after = 0\n')
    overrides = None
    if override == "environment":
        monkeypatch.setenv("STREAMGUARD_SERVER__PORT", "9000")
    else:
        overrides = {"server": {"port": 9000}}
    with pytest.raises(ConfigError) as info:
        load_config(config, overrides)
    message = str(info.value)
    # the file is blamed (not the variable), for its first bad key, and the other is counted
    assert message.startswith(f"{config}: server.port: ") and "'abc'" in message, message
    assert message.endswith("(and 1 more)") and "\n" not in message


def test_what_the_environment_completes_is_not_an_error_of_the_file(monkeypatch, tmp_path):
    """An enabled AudioHook whose API key comes from the environment: the file alone would
    fail the section's own rule, the merged settings do not."""
    config = tmp_path / "c.toml"
    config.write_text("[sources.audiohook]\nenabled = true\n")
    monkeypatch.setenv("STREAMGUARD_SOURCES__AUDIOHOOK__API_KEY", "k")
    assert load_config(config).sources.audiohook.api_key_value() == "k"

"""The source table: one entry per ``[sources.*]`` table, enabled by the config alone."""

from __future__ import annotations

import pytest

from streamguard.config import SourcesSettings, load_config
from streamguard.sources.table import SOURCES, SourceSpec, enabled_sources


def test_every_sources_table_of_the_config_has_one_entry():
    assert sorted(spec.name for spec in SOURCES) == sorted(SourcesSettings.model_fields)


def test_the_config_alone_decides_which_sources_start():
    defaults = load_config(None)
    assert [s.name for s in enabled_sources(defaults)] == ["twilio", "ingest", "rtp"]
    settings = load_config(
        None,
        {
            "sources": {
                "twilio": {"enabled": False},
                "rtp": {"enabled": False},
                "audiosocket": {"enabled": True},
                "mic": {"enabled": True},
            }
        },
    )
    assert [s.name for s in enabled_sources(settings)] == ["ingest", "audiosocket", "mic"]


def test_an_entry_is_a_websocket_route_or_a_listener_never_both():
    with pytest.raises(ValueError, match="exactly one"):
        SourceSpec("x")
    with pytest.raises(ValueError, match="exactly one"):
        SourceSpec("x", route=lambda s, c: None, listen=lambda s, c: None)  # type: ignore[arg-type]
    # a listener that binds names its transport for the bind error; the microphone and the KVS
    # readers (outgoing connections) bind nothing
    unbound = {"mic", "kvs"}
    assert all(spec.transport for spec in SOURCES if spec.listen and spec.name not in unbound)
    assert all(not spec.transport for spec in SOURCES if spec.name in unbound)


def test_the_cloud_feeds_are_off_by_default_and_start_from_their_tables():
    settings = load_config(None, {"sources": {"kvs": {"enabled": True}, "acs": {"enabled": True}}})
    names = [s.name for s in enabled_sources(settings)]
    assert names == ["twilio", "ingest", "acs", "rtp", "kvs"]
    by_name = {spec.name: spec for spec in SOURCES}
    assert by_name["acs"].route is not None and by_name["kvs"].listen is not None

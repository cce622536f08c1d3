"""Labels through a running daemon's fleet: ``streamguard label`` appends to the Redis stream
beside a running daemon (no lock: the stream numbers atomically), the daemon's /alerts delivers
it live, and a daemon started afterwards replays it with ``?since=``; on SQLite, a label written
while no daemon runs is replayed by the next one."""

from __future__ import annotations

import asyncio

import pytest

from streamguard.cli import main

from .conftest import Subscriber

pytestmark = pytest.mark.integration


async def test_a_cli_label_reaches_the_fleet_and_replays_after_a_restart(
    make_daemon, redis_server, tmp_path
):
    events = {"backend": "redis", "redis_url": redis_server.url, "path": str(tmp_path / "a.db")}
    daemon = await make_daemon(events=events)
    config = tmp_path / "cli.toml"
    config.write_text(
        f'[events]\nbackend = "redis"\nredis_url = "{redis_server.url}"\n'
        f'path = "{tmp_path / "cli.db"}"\n'
    )
    base = f"ws://127.0.0.1:{daemon.port}"
    async with Subscriber(f"{base}/alerts?types=label") as sub:
        code = await asyncio.to_thread(
            main, ["label", "CAfleet", "fake", "--note", "cloned CEO", "--config", str(config)]
        )
        assert code == 0
        await sub.wait_for(lambda e: e)
    (live,) = sub.events
    assert (live["call_id"], live["label"], live["who"]) == ("CAfleet", "fake", "local")
    await daemon.stop()

    other = await make_daemon(events={**events, "path": str(tmp_path / "b.db")})
    async with Subscriber(f"ws://127.0.0.1:{other.port}/alerts?since=0&types=label") as sub:
        await sub.wait_for(lambda e: e)
    assert sub.events[0]["seq"] == live["seq"] and sub.events[0]["note"] == "cloned CEO"


async def test_a_label_written_offline_is_replayed_by_the_next_daemon(make_daemon, tmp_path):
    path = tmp_path / "events.db"
    config = tmp_path / "c.toml"
    config.write_text(f'[events]\npath = "{path}"\n')
    assert await asyncio.to_thread(main, ["label", "CAoff", "real", "--config", str(config)]) == 0
    daemon = await make_daemon(events={"path": str(path)})
    async with Subscriber(f"ws://127.0.0.1:{daemon.port}/alerts?since=0") as sub:
        await sub.wait_for(lambda e: e)
    assert [(e["type"], e["call_id"], e["seq"]) for e in sub.events] == [("label", "CAoff", 1)]

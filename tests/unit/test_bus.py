"""The alert bus: numbering, filtering, bounded queues with a dropped notice, history."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streamguard.alerts.bus import AlertBus, SubscriptionFilter, parse_types
from streamguard.alerts.events import Alert, CallStarted, Dropped, Score
from streamguard.metrics import Metrics

NAN = float("nan")


class FakeClock:
    def __init__(self):
        self.now = 1738324800.0

    def __call__(self):
        self.now += 0.5
        return self.now


def score(bus, call="A", i=0, track="inbound"):
    return bus.publish(
        Score(
            call_id=call, track=track, source="twilio", start=i, end=i + 4, p_fake=0.5, smoothed=0.5
        )
    )


def started(bus, call="A"):
    return bus.publish(
        CallStarted(call_id=call, track=None, source="twilio", metadata={"streamSid": "MZ1"})
    )


def seqs(events):
    return [e.seq for e in events]


def test_publish_assigns_monotonic_seq_ts_and_model():
    bus = AlertBus("tiny", clock=FakeClock())
    a, b = started(bus), score(bus)
    assert (a.seq, b.seq) == (1, 2)
    assert bus.last_seq == 2
    assert a.ts == "2025-01-31T12:00:00.500Z" and b.ts == "2025-01-31T12:00:01.000Z"
    assert a.model == b.model == "tiny"
    assert a.metadata == {"streamSid": "MZ1"}


def test_publish_refuses_dropped_and_republishing_and_bad_fields_fail_at_the_producer():
    bus = AlertBus("m")
    with pytest.raises(ValueError, match="cannot publish"):
        bus.publish(
            Dropped(call_id=None, track=None, source=None, count=1, first_seq=1, last_seq=1)
        )
    published = score(bus)
    with pytest.raises(ValueError, match="already published"):
        bus.publish(published)
    with pytest.raises(ValidationError):  # no smoothed: the producer finds out, not the bus
        Score(call_id="A", track="0", source="twilio", start=0, end=4, p_fake=0.5)
    with pytest.raises(ValidationError):
        Score(call_id="A", track="0", source="twilio", start=0, end=4, p_fake=NAN, smoothed=0.5)
    assert bus.last_seq == 1  # a refused event does not consume a seq


def test_tail_replays_the_last_matching_events():
    bus = AlertBus("m")
    for i in range(5):
        started(bus, f"C{i}")
        score(bus, f"C{i}", i)
    last_two_starts = bus.subscribe(SubscriptionFilter(types={"call_started"}), tail=2)
    assert [e.call_id for e in last_two_starts.drain()] == ["C3", "C4"]
    everything = bus.subscribe(tail=100)
    assert seqs(everything.drain()) == list(range(1, 11))
    with pytest.raises(ValueError, match="mutually exclusive"):
        bus.subscribe(since=1, tail=1)


def test_filters_by_call_and_type():
    bus = AlertBus("m")
    everything = bus.subscribe()
    only_b = bus.subscribe(SubscriptionFilter(call_id="B"))
    only_alerts = bus.subscribe(SubscriptionFilter(types={"alert", "call_ended"}))
    b_scores = bus.subscribe(SubscriptionFilter(call_id="B", types={"score"}))
    started(bus, "A")
    score(bus, "A")
    started(bus, "B")
    score(bus, "B")
    bus.publish(
        Alert(
            call_id="B",
            track="inbound",
            source="twilio",
            state="raised",
            smoothed=0.8,
            threshold=0.5,
            start=0,
            end=5,
        )
    )
    assert seqs(everything.drain()) == [1, 2, 3, 4, 5]
    assert seqs(only_b.drain()) == [3, 4, 5]
    assert seqs(only_alerts.drain()) == [5]
    assert seqs(b_scores.drain()) == [4]


def test_unknown_filter_type_is_an_error():
    with pytest.raises(ValueError, match="bogus"):
        SubscriptionFilter(types={"alert", "bogus"})
    with pytest.raises(ValueError, match="bogus"):
        parse_types("alert,bogus")
    assert parse_types("") is None
    assert parse_types(" alert , score ") == {"alert", "score"}


def test_slow_subscriber_loses_oldest_and_gets_one_dropped_notice_first():
    metrics = Metrics()
    bus = AlertBus("m", metrics=metrics)
    slow = bus.subscribe(max_queue=3)
    fast = bus.subscribe(max_queue=100)
    for i in range(10):
        score(bus, i=i)
    got = list(slow.drain())
    assert [e.type for e in got] == ["dropped", "score", "score", "score"]
    notice = got[0]
    assert (notice.count, notice.first_seq, notice.last_seq) == (7, 1, 7)
    assert notice.seq == 7 and notice.call_id is None and notice.track is None
    assert seqs(got[1:]) == [8, 9, 10]
    assert seqs(fast.drain()) == list(range(1, 11))  # others unaffected
    assert slow.dropped_total == 7
    assert metrics.registry.get_sample_value("streamguard_subscriber_drops_total") == 7
    assert (
        metrics.registry.get_sample_value("streamguard_events_published_total", {"type": "score"})
        == 10
    )
    # caught up: no further notice until it falls behind again
    score(bus, i=10)
    assert [e.type for e in slow.drain()] == ["score"]


def test_drops_accumulate_into_one_notice_until_read():
    bus = AlertBus("m")
    sub = bus.subscribe(max_queue=2)
    for i in range(4):
        score(bus, i=i)  # loses 1, 2
    assert sub.get_nowait().type == "dropped"  # read the notice only
    for i in range(3):
        score(bus, i=i)  # queue [3,4] -> loses 3, 4, 5
    got = list(sub.drain())
    assert got[0].type == "dropped" and (got[0].count, got[0].first_seq, got[0].last_seq) == (
        3,
        3,
        5,
    )
    assert seqs(got[1:]) == [6, 7]
    stream = [e.seq for e in got]
    assert stream == sorted(stream) and len(set(stream)) == len(stream)


def test_filtered_subscriber_counts_only_its_own_losses():
    bus = AlertBus("m")
    sub = bus.subscribe(SubscriptionFilter(call_id="A"), max_queue=1)
    score(bus, "A", 0)  # 1
    score(bus, "B", 0)  # 2 (not for sub)
    score(bus, "A", 1)  # 3 -> loses 1
    got = list(sub.drain())
    assert (got[0].count, got[0].first_seq, got[0].last_seq) == (1, 1, 1)
    assert seqs(got[1:]) == [3]


def test_wakeup_hook_fires_on_matching_publish_only():
    bus = AlertBus("m")
    calls = []
    bus.subscribe(SubscriptionFilter(call_id="A"), on_ready=lambda: calls.append(1))
    score(bus, "B")
    assert calls == []
    score(bus, "A")
    assert calls == [1]


def test_close_unsubscribes_and_is_idempotent():
    bus = AlertBus("m")
    with bus.subscribe() as sub:
        assert bus.subscriber_count == 1
    assert bus.subscriber_count == 0
    sub.close()
    score(bus)
    assert sub.get_nowait() is None


def test_since_replays_history_and_reports_what_history_lost():
    bus = AlertBus("m", history=5)
    for i in range(8):
        score(bus, "A" if i % 2 else "B", i)  # seqs 1..8, history keeps 4..8
    assert seqs(bus.history()) == [4, 5, 6, 7, 8]
    sub = bus.subscribe(since=5)
    assert seqs(sub.drain()) == [6, 7, 8]
    gap = bus.subscribe(since=1)
    got = list(gap.drain())
    assert got[0].type == "dropped" and (got[0].first_seq, got[0].last_seq) == (2, 3)
    assert seqs(got[1:]) == [4, 5, 6, 7, 8]
    only_a = bus.subscribe(SubscriptionFilter(call_id="A"), since=3)
    assert seqs(only_a.drain()) == [4, 6, 8]
    current = bus.subscribe(since=8)
    assert list(current.drain()) == []
    score(bus, "A", 9)
    assert seqs(current.drain()) == [9]


def test_since_replay_respects_the_queue_bound():
    bus = AlertBus("m", history=100)
    for i in range(10):
        score(bus, i=i)
    sub = bus.subscribe(since=0, max_queue=4)
    got = list(sub.drain())
    assert got[0].type == "dropped" and got[0].count == 6
    assert seqs(got[1:]) == [7, 8, 9, 10]


def test_pending_deliveries_counts_what_subscribers_have_not_taken():
    bus = AlertBus("m")
    a = bus.subscribe()
    b = bus.subscribe(SubscriptionFilter(call_id="B"))
    assert bus.pending_deliveries() == 0
    score(bus, "A")
    score(bus, "B")
    assert bus.pending_deliveries() == 3
    list(a.drain())
    assert bus.pending_deliveries() == 1
    b.close()
    assert bus.pending_deliveries() == 0

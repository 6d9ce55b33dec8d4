"""What `herald receive` makes of notifications: lines, duplicates, gaps and restarts."""

from __future__ import annotations

from herald.core.notifications import (
    EVENT_NOTIFICATION,
    HANDSHAKE,
    HEARTBEAT,
    NotificationEvent,
    SubscriptionState,
    notification_bundle,
)
from herald.receiver.tracker import Event, Tracker, read_notification

BASE = "http://herald.test/fhir"


def _bundle(kind: str, count: int, numbers: list[int], *, status: str = "active") -> dict:  # type: ignore[type-arg]
    events = [
        NotificationEvent(n, "2026-01-01T00:00:00Z", "Task", f"t{n}", "update") for n in numbers
    ]
    state = SubscriptionState("s1", "http://topic", status, count)
    return notification_bundle(BASE, state, kind, events, timestamp="2026-01-01T00:00:00Z")


def test_a_notification_is_read_from_its_status_parameters() -> None:
    note = read_notification(_bundle(EVENT_NOTIFICATION, 4, [3, 4]))
    assert note.subscription == f"{BASE}/Subscription/s1"
    assert (note.subscription_id, note.base) == ("s1", BASE)
    assert (note.kind, note.status, note.events_since_start) == ("event-notification", "active", 4)
    assert note.events == (Event(3, "Task/t3", "update"), Event(4, "Task/t4", "update"))


def test_events_in_order_make_one_line_each_and_no_fetch() -> None:
    tracker = Tracker()
    handshake = tracker.see(read_notification(_bundle(HANDSHAKE, 0, [], status="requested")))
    assert handshake.line == "handshake Subscription/s1 events-since-start=0 status=requested"
    first = tracker.see(read_notification(_bundle(EVENT_NOTIFICATION, 1, [1])))
    assert first.line == "event-notification Subscription/s1 #1 Task/t1 update status=active"
    assert first.missing is None
    assert tracker.see(read_notification(_bundle(EVENT_NOTIFICATION, 3, [2, 3]))).missing is None
    assert tracker.last[f"{BASE}/Subscription/s1"] == 3


def test_a_gap_asks_for_the_missing_events() -> None:
    tracker = Tracker()
    tracker.see(read_notification(_bundle(EVENT_NOTIFICATION, 1, [1])))
    verdict = tracker.see(read_notification(_bundle(EVENT_NOTIFICATION, 5, [5])))
    assert verdict.missing == (2, 4)
    assert verdict.line.endswith("gap: missed #2..#4, fetching from $events")


def test_a_receiver_started_late_fetches_what_came_before() -> None:
    verdict = Tracker().see(read_notification(_bundle(EVENT_NOTIFICATION, 7, [7])))
    assert verdict.missing == (1, 6)


def test_a_heartbeat_ahead_of_the_last_event_is_a_gap() -> None:
    tracker = Tracker()
    tracker.see(read_notification(_bundle(EVENT_NOTIFICATION, 2, [1, 2])))
    assert tracker.see(read_notification(_bundle(HEARTBEAT, 2, []))).missing is None
    assert tracker.see(read_notification(_bundle(HEARTBEAT, 4, []))).missing == (3, 4)


def test_an_event_seen_before_is_a_duplicate() -> None:
    tracker = Tracker()
    tracker.see(read_notification(_bundle(EVENT_NOTIFICATION, 2, [1, 2])))
    verdict = tracker.see(read_notification(_bundle(EVENT_NOTIFICATION, 3, [2, 3])))
    assert "#2 Task/t2 update (duplicate), #3 Task/t3 update" in verdict.line
    assert verdict.missing is None


def test_a_count_going_back_is_a_restart() -> None:
    tracker = Tracker()
    tracker.see(read_notification(_bundle(EVENT_NOTIFICATION, 5, [5])))
    verdict = tracker.see(read_notification(_bundle(EVENT_NOTIFICATION, 1, [1])))
    assert "restart: the server counts 1 events where 5 were seen" in verdict.line
    assert "duplicate" not in verdict.line
    assert verdict.missing is None


def test_a_create_by_put_reads_as_a_create() -> None:
    created = NotificationEvent(1, "2026-01-01T00:00:00Z", "Task", "t1", "create", method="PUT")
    state = SubscriptionState("s1", "http://topic", "active", 1)
    bundle = notification_bundle(
        BASE, state, EVENT_NOTIFICATION, [created], timestamp="2026-01-01T00:00:00Z"
    )
    assert bundle["entry"][1]["request"]["method"] == "PUT"
    assert read_notification(bundle).events == (Event(1, "Task/t1", "create"),)

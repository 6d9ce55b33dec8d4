"""Labelled metrics keep the children they gave out: the same series, without prometheus_client's
per-call conversion and lock."""

from __future__ import annotations

from prometheus_client import generate_latest

from herald.runtime.metrics import Metrics


def test_a_child_is_kept_and_counts_in_the_same_series() -> None:
    metrics = Metrics()
    writes = metrics.resource_writes
    child = writes.labels("Task", "update")
    assert writes.labels("Task", "update") is child
    assert writes.labels(resource_type="Task", interaction="update") is child
    child.inc()
    writes.labels("Task", "update").inc(2)
    metrics.rejected_requests.labels(404).inc()
    metrics.rejected_requests.labels("404").inc()
    metrics.attempt_duration.labels("event").observe(0.2)
    text = generate_latest(metrics.registry).decode()
    assert 'herald_resource_writes_total{interaction="update",resource_type="Task"} 3.0' in text
    assert 'herald_rejected_requests_total{status="404"} 2.0' in text
    assert 'herald_delivery_attempt_duration_seconds_count{kind="event"} 1.0' in text


def test_removed_children_are_not_given_out_again() -> None:
    metrics = Metrics()
    gauge = metrics.subscriptions
    gauge.labels("active").set(3)
    old = gauge.labels("active")
    gauge.remove("active")
    assert gauge.labels("active") is not old
    assert gauge.labels("active")._value.get() == 0
    gauge.labels("error").set(1)
    gauge.remove_by_labels({"status": "error"})
    assert gauge.labels("error")._value.get() == 0
    kept = gauge.labels("off")
    gauge.clear()
    assert gauge.labels("off") is not kept
    gauge.labels("active").set(5)
    text = generate_latest(metrics.registry).decode()
    assert 'herald_subscriptions{status="active"} 5.0' in text
    assert 'status="error"' not in text

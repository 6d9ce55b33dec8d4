"""What the matcher tests share: the shipped topics, a change of a Task, an index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from herald.core.contracts import ResourceChange
from herald.core.matching import SubscriptionIndex
from herald.core.subscriptions import EndpointPolicy, Subscription
from herald.core.topics import TopicCatalog
from herald.runtime.packaged import load_topics

REPO = Path(__file__).resolve().parents[2]
TOPICS = load_topics(REPO / "schemas" / "topics")
HREX = "http://hl7.org/fhir/us/davinci-hrex/SubscriptionTopic/Task"
OPEN = EndpointPolicy(allow_http=True, allow_private=True)


def change(
    current: dict[str, Any] | None,
    previous: dict[str, Any] | None = None,
    interaction: str | None = None,
) -> ResourceChange:
    """A change of a Task, as the matcher consumes it (create without `previous`)."""
    if interaction is None:
        interaction = "create" if previous is None else "update"
    resource = current if current is not None else previous
    assert resource is not None
    return ResourceChange(
        event_id="e1",
        resource_type="Task",
        resource_id=resource["id"],
        interaction=interaction,
        version_id="2",
        occurred_at="2025-03-04T15:20:30.998Z",
        current=current,
        previous=previous,
        registry_revision=0,
    )


def index_of(*subscriptions: Subscription, topics: TopicCatalog = TOPICS) -> SubscriptionIndex:
    """An index holding these subscriptions."""
    index = SubscriptionIndex(topics)
    for item in subscriptions:
        index.put(item)
    return index

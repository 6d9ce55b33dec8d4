"""Which subscriptions a resource change notifies: topic triggers, then filters, through an index.

The index keeps, per topic and resource type, a map from each equality reference filter value
(e.g. owner=Organization/123) to the subscriptions that use it. An event looks up the references
it carries, so its cost grows with the number of subscriptions that could match, not with all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator

from herald.core.contracts import ResourceChange
from herald.core.search import Condition, normalize_reference
from herald.core.subscriptions import Subscription
from herald.core.topics import TopicRegistry
from herald.core.types import JsonObject

# Subscriptions whose events are numbered and logged: requested ones get them after their
# handshake; those in error keep counting them, for $events.
LIVE_STATUSES = frozenset({"requested", "active", "error"})


def _index_key(subscription: Subscription) -> tuple[str, tuple[str, ...]] | None:
    """The reference filter to index this subscription under, if it has one."""
    for criteria in subscription.criteria:
        for condition in criteria.conditions:
            if condition.parameter.type != "reference" or condition.modifier is not None:
                continue
            values = tuple(normalize_reference(v) for v in condition.values)
            # A plain id (owner=123) can match any type, so it cannot be looked up by Type/id.
            if all("/" in v for v in values):
                return condition.parameter.name, values
    return None


def _references(resource: JsonObject, condition_path: str) -> Iterator[str]:
    value: object = resource
    for part in condition_path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        else:
            return
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("reference"), str):
            yield normalize_reference(item["reference"])


class _Bucket:
    """The subscriptions of one topic and resource type."""

    def __init__(self) -> None:
        self.by_reference: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        self.paths: dict[str, str] = {}
        self.unindexed: set[str] = set()

    def add(self, subscription: Subscription) -> None:
        key = _index_key(subscription)
        if key is None:
            self.unindexed.add(subscription.id)
            return
        name, values = key
        self.paths[name] = _condition(subscription, name).parameter.path
        for value in values:
            self.by_reference[name][value].add(subscription.id)

    def discard(self, subscription: Subscription) -> None:
        key = _index_key(subscription)
        if key is None:
            self.unindexed.discard(subscription.id)
            return
        name, values = key
        for value in values:
            ids = self.by_reference[name].get(value)
            if ids is not None:
                ids.discard(subscription.id)
                if not ids:
                    del self.by_reference[name][value]

    def candidates(self, resource: JsonObject) -> set[str]:
        found = set(self.unindexed)
        for name, values in self.by_reference.items():
            for reference in _references(resource, self.paths[name]):
                found |= values.get(reference, set())
        return found


def _condition(subscription: Subscription, name: str) -> Condition:
    return next(
        c for cr in subscription.criteria for c in cr.conditions if c.parameter.name == name
    )


class SubscriptionIndex:
    """Live subscriptions, indexed for matching."""

    def __init__(self, topics: TopicRegistry) -> None:
        self.topics = topics
        self.revision = 0
        self._subscriptions: dict[str, Subscription] = {}
        self._buckets: dict[tuple[str, str], _Bucket] = defaultdict(_Bucket)

    def __len__(self) -> int:
        return len(self._subscriptions)

    def _bucket_keys(self, subscription: Subscription) -> list[tuple[str, str]]:
        topic = self.topics[subscription.topic_url]
        if subscription.resource_type:
            return [(topic.url, subscription.resource_type)]
        return [(topic.url, resource_type) for resource_type in topic.resource_types]

    def put(self, subscription: Subscription) -> None:
        """Add or replace a subscription; one that is not live is removed."""
        self.remove(subscription.id)
        if subscription.status not in LIVE_STATUSES or subscription.topic_url not in self.topics:
            return
        self._subscriptions[subscription.id] = subscription
        for key in self._bucket_keys(subscription):
            self._buckets[key].add(subscription)

    def remove(self, subscription_id: str) -> None:
        """Forget a subscription."""
        old = self._subscriptions.pop(subscription_id, None)
        if old is not None:
            for key in self._bucket_keys(old):
                self._buckets[key].discard(old)

    def load(self, subscriptions: Iterable[Subscription], revision: int) -> None:
        """Apply a batch of subscription changes up to a registry revision."""
        for subscription in subscriptions:
            self.put(subscription)
        self.revision = max(self.revision, revision)

    def match(self, change: ResourceChange) -> list[Subscription]:
        """The subscriptions this change notifies, in a stable order."""
        matched: list[Subscription] = []
        resource = change.current if change.current is not None else change.previous
        if resource is None:
            return matched
        for topic in self.topics.values():
            if not topic.fires(
                change.resource_type, change.interaction, change.previous, change.current
            ):
                continue
            bucket = self._buckets.get((topic.url, change.resource_type))
            if bucket is None:
                continue
            for subscription_id in sorted(bucket.candidates(resource)):
                subscription = self._subscriptions[subscription_id]
                if subscription.matches(resource):
                    matched.append(subscription)
        return matched

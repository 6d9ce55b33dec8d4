"""Which subscriptions a resource change notifies: topic triggers, then filters, through an index.

Per topic and resource type, each subscription is filed under ONE of its equality filters:
- a reference filter whose values are all `Type/id` (owner=Organization/123, also absolute or
  `owner:Organization=123`), keyed by the normalised `Type/id`;
- otherwise a token filter without modifier whose values all name a code (status=completed,
  code=http://loinc.org|1234-5, code=|x), keyed by the code;
- otherwise (no filter, `:not`, `:missing`, dates, `system|` tokens, plain-id references)
  it is "unindexed" and considered for every event.
References are preferred because they are selective (owner), codes next. An event looks up the
keys it carries (its owner's `Type/id`, its status and codes, ...) in the few parameters that
have indexed subscriptions, and only those candidates are tested with the full filters
(`Subscription.matches`), so the index is only ever a pre-selection and cannot change a result.
The cost of an event follows the number of parameters indexed and of candidates it finds, not
the number of subscriptions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from herald.core.contracts import ResourceChange
from herald.core.search import Condition, SearchParameter, normalize_reference
from herald.core.search._token import codes, parse_token
from herald.core.search._values import resolve, unescape
from herald.core.states import SubscriptionStatus
from herald.core.subscriptions import Subscription
from herald.core.topics import TopicCatalog
from herald.core.types import JsonObject

# Subscriptions whose events are numbered and logged: requested ones get them after their
# handshake; those in error keep counting them, for $events.
LIVE_STATUSES = frozenset(s for s in SubscriptionStatus if s.live)

_PLAIN_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_RELATIVE = re.compile(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?")


@dataclass(frozen=True)
class IndexKey:
    """Where a subscription is filed: a condition and the lookup keys of its values.

    `exact`: a key found in an event decides the condition by itself (relative `Type/id`
    references, codes without a system), so it need not be tested again.
    """

    condition: Condition
    keys: tuple[str, ...]
    exact: bool

    @property
    def parameter(self) -> SearchParameter:
        """The indexed parameter."""
        return self.condition.parameter


def _reference_keys(condition: Condition) -> tuple[tuple[str, ...], bool] | None:
    modifier = condition.modifier
    keys = []
    exact = True
    for value in condition.values:
        text = unescape(value)
        if modifier is not None:
            if not modifier[:1].isupper():  # :identifier, :missing
                return None
            text = text if "/" in text else f"{modifier}/{text}"
        key = normalize_reference(text)
        # A plain id (owner=123) can match any type, so it cannot be looked up by Type/id.
        # Other keys are `Type/id` or a literal (urn:uuid:...), as events normalise theirs.
        if _PLAIN_ID.fullmatch(key):
            return None
        # Absolute values must also match the base; literals depend on Reference.type.
        exact = exact and _RELATIVE.fullmatch(text) is not None
        keys.append(key)
    return tuple(keys), exact


def _token_keys(condition: Condition) -> tuple[tuple[str, ...], bool] | None:
    if condition.modifier is not None:
        return None
    keys = []
    exact = True
    for value in condition.values:
        token = parse_token(condition.parameter, value)
        if token.code is None:  # `system|`: any code
            return None
        exact = exact and token.system is None
        keys.append(token.code)
    return tuple(keys), exact


def index_key(subscription: Subscription) -> IndexKey | None:
    """The filter to index a subscription under (a reference first, then a code), if any."""
    conditions = [c for criteria in subscription.criteria for c in criteria.conditions]
    for kind, extract in (("reference", _reference_keys), ("token", _token_keys)):
        for condition in conditions:
            if condition.parameter.type == kind and (found := extract(condition)) is not None:
                return IndexKey(condition, *found)
    return None


def _event_keys(parameter: SearchParameter, resource: JsonObject) -> Iterator[str]:
    """The lookup keys a resource carries for a parameter (superset of what can match)."""
    if parameter.type == "reference":
        for item in resolve(resource, parameter.path):
            if isinstance(item, dict):
                reference = item.get("reference")
                if isinstance(reference, str):
                    yield normalize_reference(reference)
    else:
        for item in resolve(resource, parameter.path):
            for _, code in codes(item, parameter.implied_system):
                if code is not None:
                    yield code


@dataclass(frozen=True, slots=True)
class _Entry:
    """A subscription as filed: what is left to test once the index has selected it."""

    subscription: Subscription
    residual: tuple[Condition, ...]
    # Filters on two resource types can never both hold (Subscription.matches is then False).
    possible: bool


def _entry(subscription: Subscription, key: IndexKey | None) -> _Entry:
    conditions = tuple(c for criteria in subscription.criteria for c in criteria.conditions)
    if key is not None and key.exact:
        skip = key.condition
        conditions = tuple(c for c in conditions if c is not skip)
    types = {criteria.resource_type for criteria in subscription.criteria}
    return _Entry(subscription, conditions, len(types) <= 1)


class _Bucket:
    """The subscriptions of one topic and resource type."""

    def __init__(self) -> None:
        # parameter name -> (parameter, key -> {subscription id: entry})
        self.indexed: dict[str, tuple[SearchParameter, dict[str, dict[str, _Entry]]]] = {}
        self.unindexed: dict[str, _Entry] = {}

    def add(self, entry: _Entry, key: IndexKey | None) -> None:
        subscription_id = entry.subscription.id
        if key is None:
            self.unindexed[subscription_id] = entry
            return
        name = key.parameter.name
        if name not in self.indexed:
            self.indexed[name] = (key.parameter, {})
        by_key = self.indexed[name][1]
        for value in key.keys:
            by_key.setdefault(value, {})[subscription_id] = entry

    def discard(self, subscription_id: str, key: IndexKey | None) -> None:
        if key is None:
            self.unindexed.pop(subscription_id, None)
            return
        found = self.indexed.get(key.parameter.name)
        if found is None:
            return
        by_key = found[1]
        for value in key.keys:
            entries = by_key.get(value)
            if entries is not None:
                entries.pop(subscription_id, None)
                if not entries:
                    del by_key[value]
        if not by_key:
            del self.indexed[key.parameter.name]

    def candidates(self, resource: JsonObject) -> dict[str, _Entry]:
        found = dict(self.unindexed)
        for parameter, by_key in self.indexed.values():
            for key in _event_keys(parameter, resource):
                entries = by_key.get(key)
                if entries:
                    found.update(entries)
        return found


class SubscriptionIndex:
    """Live subscriptions, indexed for matching."""

    def __init__(self, topics: TopicCatalog) -> None:
        self.topics = topics
        self.revision = 0
        self._subscriptions: dict[str, tuple[Subscription, IndexKey | None]] = {}
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def __len__(self) -> int:
        return len(self._subscriptions)

    def _bucket_keys(self, subscription: Subscription) -> list[tuple[str, str]]:
        topic = self.topics[subscription.topic_url]
        if subscription.resource_type:
            return [(topic.url, subscription.resource_type)]
        return [(topic.url, resource_type) for resource_type in sorted(topic.resource_types)]

    def put(self, subscription: Subscription) -> None:
        """Add or replace a subscription; one that is not live is removed."""
        self.remove(subscription.id)
        if subscription.status not in LIVE_STATUSES or subscription.topic_url not in self.topics:
            return
        key = index_key(subscription)
        entry = _entry(subscription, key)
        self._subscriptions[subscription.id] = (subscription, key)
        for bucket_key in self._bucket_keys(subscription):
            bucket = self._buckets.get(bucket_key)
            if bucket is None:
                bucket = self._buckets[bucket_key] = _Bucket()
            bucket.add(entry, key)

    def remove(self, subscription_id: str) -> None:
        """Forget a subscription."""
        entry = self._subscriptions.pop(subscription_id, None)
        if entry is not None:
            old, key = entry
            for bucket_key in self._bucket_keys(old):
                bucket = self._buckets.get(bucket_key)
                if bucket is not None:
                    bucket.discard(old.id, key)

    def load(self, subscriptions: Iterable[Subscription], revision: int) -> None:
        """Apply a batch of subscription changes up to a registry revision."""
        for subscription in subscriptions:
            self.put(subscription)
        self.revision = max(self.revision, revision)

    def candidates(self, change: ResourceChange) -> list[str]:
        """The ids the index pre-selects for a change, before filters are tested (diagnostics)."""
        resource = change.current if change.current is not None else change.previous
        found: set[str] = set()
        for topic in self.topics.values():
            bucket = self._buckets.get((topic.url, change.resource_type))
            if bucket is not None and resource is not None:
                found.update(bucket.candidates(resource))
        return sorted(found)

    def match(self, change: ResourceChange) -> list[Subscription]:
        """The subscriptions this change notifies, in a stable order."""
        matched: list[Subscription] = []
        resource = change.current if change.current is not None else change.previous
        if resource is None:
            return matched
        for topic in self.topics.values():
            bucket = self._buckets.get((topic.url, change.resource_type))
            if bucket is None:
                continue
            if not topic.fires(
                change.resource_type, change.interaction, change.previous, change.current
            ):
                continue
            # Elements per parameter, looked up once for all the candidates of this event.
            cache: dict[str, list[Any]] = {}
            found = bucket.candidates(resource)
            for subscription_id in sorted(found):
                entry = found[subscription_id]
                if entry.possible and all(c.matches(resource, cache=cache) for c in entry.residual):
                    matched.append(entry.subscription)
        return matched

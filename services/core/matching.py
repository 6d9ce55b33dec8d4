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
from typing import Any, NamedTuple

from herald.core.contracts import ResourceChange
from herald.core.search import Condition, Criteria, SearchParameter, normalize_reference
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


def _index_key(conditions: list[Condition]) -> IndexKey | None:
    for kind, extract in (("reference", _reference_keys), ("token", _token_keys)):
        for condition in conditions:
            if condition.parameter.type == kind and (found := extract(condition)) is not None:
                return IndexKey(condition, *found)
    return None


def index_key(subscription: Subscription) -> IndexKey | None:
    """The filter to index a subscription under (a reference first, then a code), if any."""
    return _index_key([c for criteria in subscription.criteria for c in criteria.conditions])


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


class Plan(NamedTuple):
    """What matching needs of a subscription: where it is filed and what is left to test.

    Nothing else of the subscription is kept (a million of them must fit in memory), and
    subscriptions with the same filters may share one plan. A tuple: cheap to create and small.
    """

    topic_url: str
    resource_type: str
    """The resource type its filters name; "" for every resource type of the topic."""
    parameter: SearchParameter | None
    """The indexed parameter; None when the subscription is considered for every event."""
    keys: tuple[str, ...]
    residual: tuple[Condition, ...]
    """The conditions the lookup does not decide, tested on each candidate."""
    possible: bool
    """False when its filters name two resource types (nothing can then match)."""


def plan_of(topic_url: str, criteria: tuple[Criteria, ...]) -> Plan:
    """The plan of a subscription to a topic with these filters."""
    subscription_conditions = [c for item in criteria for c in item.conditions]
    key = _index_key(subscription_conditions)
    residual = tuple(subscription_conditions)
    if key is not None and key.exact:
        residual = tuple(c for c in residual if c is not key.condition)
    return Plan(
        topic_url=topic_url,
        resource_type=criteria[0].resource_type if criteria else "",
        parameter=None if key is None else key.parameter,
        keys=() if key is None else key.keys,
        residual=residual,
        possible=len({item.resource_type for item in criteria}) <= 1,
    )


class _Entry(NamedTuple):
    """A subscription as filed: its id and its (possibly shared) plan."""

    id: str
    plan: Plan


# Entries made a million times over when a registry loads: tuple.__new__ skips the named
# tuple's own __new__ (twice as slow).
_new_entry = tuple.__new__


# The subscriptions filed under one key: one entry (the common case, and the cheapest in
# memory), or several by id.
_Filed = _Entry | dict[str, _Entry]


class _Bucket:
    """The subscriptions of one topic and resource type."""

    def __init__(self) -> None:
        # parameter name -> (parameter, key -> what is filed under it)
        self.indexed: dict[str, tuple[SearchParameter, dict[str, _Filed]]] = {}
        self.unindexed: dict[str, _Entry] = {}

    def add(self, entry: _Entry) -> None:
        parameter = entry.plan.parameter
        if parameter is None:
            self.unindexed[entry.id] = entry
            return
        found = self.indexed.get(parameter.name)
        if found is None:
            found = self.indexed[parameter.name] = (parameter, {})
        by_key = found[1]
        for value in entry.plan.keys:
            filed = by_key.get(value)
            if filed is None:
                by_key[value] = entry
            elif isinstance(filed, dict):
                filed[entry.id] = entry
            elif filed.id == entry.id:
                by_key[value] = entry
            else:
                by_key[value] = {filed.id: filed, entry.id: entry}

    def discard(self, entry: _Entry) -> None:
        parameter = entry.plan.parameter
        if parameter is None:
            self.unindexed.pop(entry.id, None)
            return
        found = self.indexed.get(parameter.name)
        if found is None:
            return
        by_key = found[1]
        for value in entry.plan.keys:
            filed = by_key.get(value)
            if isinstance(filed, dict):
                filed.pop(entry.id, None)
                if len(filed) == 1:
                    by_key[value] = next(iter(filed.values()))
            elif filed is not None and filed.id == entry.id:
                del by_key[value]
        if not by_key:
            del self.indexed[parameter.name]

    def candidates(self, resource: JsonObject) -> dict[str, _Entry]:
        found = dict(self.unindexed)
        for parameter, by_key in self.indexed.values():
            for key in _event_keys(parameter, resource):
                filed = by_key.get(key)
                if filed is None:
                    continue
                if isinstance(filed, dict):
                    found.update(filed)
                else:
                    found[filed.id] = filed
        return found


class SubscriptionIndex:
    """Live subscriptions, indexed for matching."""

    def __init__(self, topics: TopicCatalog) -> None:
        self.topics = topics
        self.revision = 0
        self._entries: dict[str, _Entry] = {}
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        # (topic url, resource type) -> the buckets a plan is filed in
        self._filing: dict[tuple[str, str], list[_Bucket]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _buckets_of(self, plan: Plan) -> list[_Bucket]:
        """The buckets a plan is filed in; none when its topic is not served."""
        where = (plan.topic_url, plan.resource_type)
        found = self._filing.get(where)
        if found is None:
            found = []
            if plan.topic_url in self.topics:
                topic = self.topics[plan.topic_url]
                kinds = [plan.resource_type] if plan.resource_type else topic.resource_types
                found = [
                    self._buckets.setdefault((topic.url, kind), _Bucket()) for kind in sorted(kinds)
                ]
            self._filing[where] = found
        return found

    def put(self, subscription: Subscription) -> None:
        """Add or replace a subscription; one that is not live is removed."""
        plan = plan_of(subscription.topic_url, subscription.criteria)
        self.put_plan(subscription.id, subscription.status, plan)

    def put_plan(self, subscription_id: str, status: str, plan: Plan) -> None:
        """Add or replace a subscription by its plan; one that is not live (or whose topic is
        not served) is removed."""
        entries = self._entries
        if subscription_id in entries:
            self.remove(subscription_id)
        buckets = self._filing.get((plan.topic_url, plan.resource_type))
        if buckets is None:
            buckets = self._buckets_of(plan)
        if status not in LIVE_STATUSES or not buckets:
            return
        entry = entries[subscription_id] = _new_entry(_Entry, (subscription_id, plan))
        for bucket in buckets:
            bucket.add(entry)

    def remove(self, subscription_id: str) -> None:
        """Forget a subscription."""
        entry = self._entries.pop(subscription_id, None)
        if entry is not None:
            for bucket in self._buckets_of(entry.plan):
                bucket.discard(entry)

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

    def match(self, change: ResourceChange) -> list[str]:
        """The ids of the subscriptions this change notifies, in a stable order."""
        matched: list[str] = []
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
                plan = found[subscription_id].plan
                if plan.possible and all(c.matches(resource, cache=cache) for c in plan.residual):
                    matched.append(subscription_id)
        return matched

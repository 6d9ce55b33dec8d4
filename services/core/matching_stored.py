"""Stored Subscription resources as the matcher files them: plans, parsed fast and shared.

A matcher loads the whole registry when it starts (a million subscriptions must load in
seconds), so it reads of a stored Subscription only what matching depends on: its topic
(`criteria`) and its filters (`_criteria`), checked by the same rules as `parse_subscription`,
with the same errors — from the registry's `topic` and `filters` columns (`plan_of_filters`),
or from the resource where a row has no `filters` (`plan`). The channel is not read: it was
checked when the subscription was written, and the dispatcher checks it again against today's
rules before each delivery.

Filters are parsed once per distinct set (a bounded memo), and the most common filters by far —
a reference to a `Type/id` first, as in `Task?owner=Organization/123` (or `…&status=completed`)
— are recognised without running the general parser on that reference, which would then be
filed under it: their plan is the one the parser would give (tests/unit/test_matching_stored.py
checks that they agree).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

from herald.core.errors import SearchParameterError
from herald.core.matching import Plan, plan_of
from herald.core.search import PARAMETERS, Condition, SearchParameter, parse_filter
from herald.core.subscriptions import (
    checked_filter_text,
    checked_filter_texts,
    compile_filters,
    filter_texts,
    subscription_object,
    subscription_topic,
)
from herald.core.topics import Topic, TopicCatalog

# A filter whose first parameter is one relative reference without escapes or history
# (`owner=Organization/1`, `Task?owner=Organization/1`, `Task.owner=Organization/1`), possibly
# followed by more parameters without `?` or white space (`&status=completed`), is read in
# parts: what precedes its first `/` (a few distinct heads, memoised), the id up to the first
# `&`, and the rest (memoised).
_REFERENCE_HEAD = re.compile(
    r"(?:(?P<head>[A-Z][A-Za-z]*)[?.])?(?P<name>[a-z][a-z0-9-]*)=(?P<type>[A-Z][A-Za-z]+)"
)
_REFERENCE_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_REST = re.compile(r"[^?\s]*")
# A filter on one token parameter: its head (`code`, `Task?code`, `Task.code`) before the `=`,
# and one value without escapes, percent-escapes, commas, `&`, `?` or white space.
_TOKEN_HEAD = re.compile(r"(?:(?P<head>[A-Z][A-Za-z]*)[?.])?(?P<name>[a-z][a-z0-9-]*)")
_PLAIN_TOKEN = re.compile(r"[^&%\\,?\s]+")
# Distinct filter sets whose plans are remembered while a registry loads.
PLAN_MEMO_SIZE = 65_536
# Plans made a million times over: tuple.__new__ skips the named tuple's own __new__ (twice as
# slow); the fields are in Plan's order.
_new_plan = tuple.__new__

# What a reference-first head decides: the filter's resource type, the parameter, and where the
# value (`Type/id`) starts in the filter.
_Head = tuple[str, SearchParameter, int]


class PlanCompiler:
    """Plans of stored Subscription resources for one topic catalog."""

    def __init__(self, topics: TopicCatalog) -> None:
        self.topics = topics
        self._topics = {url: topics[url] for url in topics}
        self._compile = lru_cache(maxsize=PLAN_MEMO_SIZE)(self._compile_uncached)
        self._others = lru_cache(maxsize=PLAN_MEMO_SIZE)(self._others_uncached)
        self._head = lru_cache(maxsize=PLAN_MEMO_SIZE)(self._head_uncached)
        self._token_head = lru_cache(maxsize=PLAN_MEMO_SIZE)(self._token_head_uncached)

    def plan(self, resource: object) -> Plan:
        """The plan of a stored Subscription resource; InvalidSubscription if its topic or
        filters are not supported (any more)."""
        resource = subscription_object(resource)
        named = resource.get("criteria")
        topic = self._topics.get(named) if isinstance(named, str) else None
        if topic is None:
            topic = subscription_topic(resource, self.topics)  # raises why it is not served
        return self._plan_of_texts(topic, filter_texts(resource))

    def plan_of_filters(self, topic_url: str, texts: list[object]) -> Plan:
        """The plan of a subscription stored with this topic and these filter-criteria strings
        (the registry's `topic` and `filters` columns), checked as `plan` checks a resource."""
        topic = self._topics.get(topic_url)
        if topic is None:
            topic = subscription_topic({"criteria": topic_url}, self.topics)
        if len(texts) == 1:
            return self._plan_of_texts(topic, (checked_filter_text(texts[0]),))
        return self._plan_of_texts(topic, checked_filter_texts(texts))

    def _plan_of_texts(self, topic: Topic, texts: tuple[str, ...]) -> Plan:
        if len(texts) == 1:
            plan = self._reference_first(topic, texts[0])
            if plan is not None:
                return plan
        return self._compile(topic.url, texts)

    def _compile_uncached(self, topic_url: str, texts: tuple[str, ...]) -> Plan:
        if len(texts) == 1 and (plan := self._one_code(topic_url, texts[0])) is not None:
            return plan
        return plan_of(topic_url, compile_filters(self.topics[topic_url], texts))

    def _reference_first(self, topic: Topic, text: str) -> Plan | None:
        """The plan of a filter whose first parameter is a `Type/id` reference, filed under it,
        without the general parser for that reference; None when the filter has another form
        (or is invalid: the parser then says why)."""
        before, slash, after = text.partition("/")
        if not slash:
            return None
        head = self._head(topic.url, before)
        if head is None:
            return None
        identifier, amp, rest = after.partition("&")
        if _REFERENCE_ID.fullmatch(identifier) is None:
            return None
        resource_type, parameter, start = head
        residual: tuple[Condition, ...] | None = ()
        if amp:
            residual = self._others(topic.url, resource_type, rest)
            if residual is None:
                return None
        value = text[start : len(before) + 1 + len(identifier)]
        # topic_url, resource_type, parameter, keys, residual, possible
        fields = (topic.url, resource_type, parameter, (value,), residual, True)
        return _new_plan(Plan, fields)

    def _one_code(self, topic_url: str, text: str) -> Plan | None:
        """The plan of a filter on one token parameter with one plain value (`code=c`,
        `Task?code=system|c`), filed under the code, without the general parser; None for
        other forms (escapes, several values or parameters, modifiers, `system|`)."""
        before, equals, value = text.partition("=")
        if not equals:
            return None
        head = self._token_head(topic_url, before)
        if head is None or _PLAIN_TOKEN.fullmatch(value) is None:
            return None
        system, bar, code = value.rpartition("|")
        if not code or "|" in system:
            return None
        resource_type, parameter = head
        residual: tuple[Condition, ...] = ()
        if bar:  # the system is tested on each candidate; a code alone is decided by the lookup
            residual = (Condition(parameter, None, (value,)),)
        return _new_plan(Plan, (topic_url, resource_type, parameter, (code,), residual, True))

    def _token_head_uncached(
        self, topic_url: str, before: str
    ) -> tuple[str, SearchParameter] | None:
        """The resource type and token parameter of a filter whose text before its first `=`
        is `before` (`Task?code`); None for other forms."""
        found = self._named(topic_url, _TOKEN_HEAD, before, "token")
        return None if found is None else found[1:]

    def _head_uncached(self, topic_url: str, before: str) -> _Head | None:
        """The resource type, reference parameter and value's start of a filter whose text
        before its first `/` is `before` (`Task?owner=Organization`); None for other forms."""
        found = self._named(topic_url, _REFERENCE_HEAD, before, "reference")
        if found is None:
            return None
        match, resource_type, parameter = found
        if parameter.target_types and match["type"] not in parameter.target_types:
            return None
        return resource_type, parameter, match.start("type")

    def _named(
        self, topic_url: str, pattern: re.Pattern[str], before: str, kind: str
    ) -> tuple[re.Match[str], str, SearchParameter] | None:
        """The head of a filter (`pattern`: an optional type, a parameter name), its resource
        type and its parameter, if that is a parameter of this kind the topic allows."""
        found = pattern.fullmatch(before)
        if found is None:
            return None
        topic = self.topics[topic_url]
        resource_type, parameters = _parameter_rules(topic, found["head"], kind)
        parameter = parameters.get(found["name"])
        return None if parameter is None else (found, resource_type, parameter)

    def _others_uncached(
        self, topic_url: str, resource_type: str, rest: str
    ) -> tuple[Condition, ...] | None:
        """The conditions of the parameters after the first, parsed one by one (as the parser
        does); None when one is invalid or a reference, which could be filed instead, or when
        the rest holds `?` or white space."""
        if _REST.fullmatch(rest) is None:
            return None
        allowed = self.topics[topic_url].filter_parameters(resource_type)
        conditions: list[Condition] = []
        for segment in rest.split("&"):
            if not segment:
                continue
            try:
                (condition,) = parse_filter(resource_type, segment, allowed=allowed).conditions
            except SearchParameterError:
                return None
            if condition.parameter.type == "reference":
                return None
            conditions.append(condition)
        return tuple(conditions)


def _parameter_rules(
    topic: Topic, head: str | None, kind: str
) -> tuple[str, Mapping[str, SearchParameter]]:
    """The resource type a filter starting with `head` is on, and the parameters of this type
    (reference, token) a subscription to the topic may filter it by (none when the parser
    must decide)."""
    resource_types = topic.resource_types
    if head is None and len(resource_types) == 1:
        # Without a type the filter is on the topic's only resource type.
        (resource_type,) = resource_types
    elif head is not None and head in resource_types:
        resource_type = head
    else:
        return "", {}
    parameters = PARAMETERS.get(resource_type, {})
    return resource_type, {
        name: parameters[name]
        for name in topic.filter_parameters(resource_type)
        if name in parameters and parameters[name].type == kind
    }

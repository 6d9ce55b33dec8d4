"""SubscriptionTopics as data: topic files, and whether a resource change triggers a topic."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from herald.core.errors import HeraldError, TopicDefinitionError
from herald.core.search import PARAMETERS, Criteria, parse_query
from herald.core.types import JsonObject

INTERACTIONS = frozenset({"create", "update", "delete"})


# Parameter types whose test of a resource depends on nothing but the elements found (dates
# may depend on the time of the test).
_PURE_TYPES = frozenset({"token", "string", "uri"})

# Results a trigger's criteria remember; more distinct values than this start afresh.
_REMEMBERED = 1024


class _Test:
    """A trigger's criteria, with their results remembered by the values they look at.

    A topic's own criteria (`status:not=draft&intent=order`) are tested on every change, on
    resources whose few values there recur (a handful of statuses): the test walks generators
    and predicates per condition, the remembered result is a dict lookup. Only criteria on
    top-level elements of pure types, tested on a resource whose values there are strings (or
    absent), are remembered; anything else is tested as before.
    """

    __slots__ = ("criteria", "paths", "results")

    def __init__(self, criteria: Criteria) -> None:
        self.criteria = criteria
        parameters = [condition.parameter for condition in criteria.conditions]
        pure = all(p.type in _PURE_TYPES and "." not in p.path for p in parameters)
        self.paths = tuple(p.path for p in parameters) if pure else None
        self.results: dict[tuple[object, ...], bool] = {}

    def __call__(self, resource: JsonObject | None) -> bool:
        if resource is None:
            return False
        paths = self.paths
        if paths is None:
            return self.criteria.matches(resource)
        key = [resource.get("resourceType")]
        key += [resource.get(path) for path in paths]
        for value in key:
            if value is not None and type(value) is not str:
                return self.criteria.matches(resource)
        remembered = tuple(key)
        found = self.results.get(remembered)
        if found is None:
            if len(self.results) >= _REMEMBERED:
                self.results.clear()
            found = self.results[remembered] = self.criteria.matches(resource)
        return found


def _always(resource: JsonObject | None) -> bool:
    return True


@dataclass(frozen=True)
class ResourceTrigger:
    """One resourceTrigger: which interactions on which resource type, under which criteria."""

    resource_type: str
    interactions: frozenset[str]
    previous: Criteria | None
    current: Criteria | None
    result_for_create: bool
    result_for_delete: bool
    require_both: bool
    _previous: Callable[[JsonObject | None], bool] = field(init=False, repr=False, compare=False)
    _current: Callable[[JsonObject | None], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, criteria in (("_previous", self.previous), ("_current", self.current)):
            object.__setattr__(self, name, _always if criteria is None else _Test(criteria))

    def fires(
        self, interaction: str, previous: JsonObject | None, current: JsonObject | None
    ) -> bool:
        """Whether a change (interaction, version before, version after) triggers this topic."""
        if interaction not in self.interactions:
            return False
        if self.previous is None and self.current is None:
            return True
        if interaction == "create":
            previous_ok = self.result_for_create
        else:
            previous_ok = self._previous(previous)
        # Decided without testing the current version?
        if self.require_both:
            if not previous_ok:
                return False
        elif previous_ok:
            return True
        if interaction == "delete":
            return self.result_for_delete
        return self._current(current)


@dataclass(frozen=True)
class FilterSpec:
    """One canFilterBy entry."""

    resource_type: str
    parameter: str
    modifiers: tuple[str, ...]


@dataclass(frozen=True)
class Topic:
    """A SubscriptionTopic Herald serves."""

    url: str
    resource: JsonObject
    triggers: tuple[ResourceTrigger, ...]
    can_filter_by: tuple[FilterSpec, ...]

    @property
    def resource_types(self) -> frozenset[str]:
        """The resource types whose changes this topic watches."""
        return frozenset(t.resource_type for t in self.triggers)

    def filter_parameters(self, resource_type: str) -> frozenset[str]:
        """The filter parameter names allowed on resources of that type."""
        return frozenset(
            f.parameter for f in self.can_filter_by if f.resource_type == resource_type
        )

    def fires(
        self,
        resource_type: str,
        interaction: str,
        previous: JsonObject | None,
        current: JsonObject | None,
    ) -> bool:
        """Whether any trigger of this topic fires for the change."""
        for trigger in self.triggers:
            if trigger.resource_type == resource_type and trigger.fires(
                interaction, previous, current
            ):
                return True
        return False


def _resource_type_of(canonical: str) -> str:
    # "http://hl7.org/fhir/StructureDefinition/Task" or plain "Task"
    return canonical.rstrip("/").rsplit("/", 1)[-1]


def _criteria(resource_type: str, text: object, where: str) -> Criteria | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise TopicDefinitionError(f"{where} must be a string")
    try:
        return parse_query(resource_type, text)
    except HeraldError as exc:
        raise TopicDefinitionError(f"{where}: {exc}") from exc


def _result(value: object, default: str, where: str) -> bool:
    value = default if value is None else value
    if value not in ("test-passes", "test-fails"):
        raise TopicDefinitionError(f"{where} must be test-passes or test-fails")
    return value == "test-passes"


def parse_topic(resource: JsonObject) -> Topic:
    """Build a Topic from an R5-style SubscriptionTopic JSON resource."""
    if resource.get("resourceType") != "SubscriptionTopic":
        raise TopicDefinitionError("resourceType must be SubscriptionTopic")
    url = resource.get("url")
    if not isinstance(url, str) or not url:
        raise TopicDefinitionError("a topic needs a url")
    triggers = []
    for index, raw in enumerate(resource.get("resourceTrigger") or []):
        where = f"{url} resourceTrigger[{index}]"
        resource_type = _resource_type_of(str(raw.get("resource", "")))
        interactions = frozenset(raw.get("supportedInteraction") or INTERACTIONS)
        if not interactions <= INTERACTIONS:
            raise TopicDefinitionError(f"{where}: unknown interaction in {sorted(interactions)}")
        if raw.get("fhirPathCriteria") is not None:
            raise TopicDefinitionError(
                f"{where}: fhirPathCriteria is not supported; express the trigger as "
                "queryCriteria (previous/current search criteria)"
            )
        query = raw.get("queryCriteria") or {}
        triggers.append(
            ResourceTrigger(
                resource_type=resource_type,
                interactions=interactions,
                previous=_criteria(resource_type, query.get("previous"), f"{where}.previous"),
                current=_criteria(resource_type, query.get("current"), f"{where}.current"),
                result_for_create=_result(query.get("resultForCreate"), "test-passes", where),
                result_for_delete=_result(query.get("resultForDelete"), "test-fails", where),
                require_both=bool(query.get("requireBoth", False)),
            )
        )
    if not triggers:
        raise TopicDefinitionError(f"{url}: a topic needs at least one resourceTrigger")
    filters = tuple(
        FilterSpec(
            resource_type=_resource_type_of(str(f.get("resource", triggers[0].resource_type))),
            parameter=str(f["filterParameter"]),
            modifiers=tuple(f.get("modifier") or ()),
        )
        for f in resource.get("canFilterBy") or []
    )
    for spec in filters:
        known = PARAMETERS.get(spec.resource_type)
        if known is not None and spec.parameter not in known:
            raise TopicDefinitionError(
                f"{url}: canFilterBy names '{spec.parameter}', which is not a search parameter "
                f"of {spec.resource_type} (known: {', '.join(sorted(known))})"
            )
    return Topic(url=url, resource=resource, triggers=tuple(triggers), can_filter_by=filters)


class TopicCatalog(Mapping[str, Topic]):
    """The topics Herald serves, by canonical URL."""

    def __init__(self, topics: Iterable[Topic]) -> None:
        self._topics = {t.url: t for t in topics}

    def __getitem__(self, url: str) -> Topic:
        return self._topics[url.split("|", 1)[0]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._topics)

    def __len__(self) -> int:
        return len(self._topics)

    def __contains__(self, url: object) -> bool:
        return isinstance(url, str) and url.split("|", 1)[0] in self._topics

    @classmethod
    def from_documents(cls, documents: Iterable[tuple[str, object]]) -> TopicCatalog:
        """The topics of parsed topic files, given as (file name, JSON document) pairs."""
        topics = []
        for name, document in documents:
            try:
                topics.append(parse_topic(document))  # type: ignore[arg-type]
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                # JSON of the wrong shape (a list, a string where an object belongs, ...)
                raise TopicDefinitionError(f"{name}: {exc}") from exc
        if not topics:
            raise TopicDefinitionError("no topic files")
        return cls(topics)

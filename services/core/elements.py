"""`_summary` and `_elements`: the subset of a resource a search answer shows.

A subset is marked with the SUBSETTED tag in meta.tag, as FHIR R4 requires; the elements a
resource must have (its mandatory ones, `id` and `meta`) are always kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from herald.core.errors import SearchParameterError
from herald.core.types import JsonObject

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}

_ALWAYS = frozenset({"resourceType", "id", "meta"})

# Elements with min 1 (kept in every subset), and the summary elements (isSummary) of R4.
_MANDATORY: Mapping[str, frozenset[str]] = MappingProxyType(
    {"Task": frozenset({"status", "intent"})}
)
_SUMMARY: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "Task": frozenset(
            {
                "implicitRules",
                "identifier",
                "instantiatesCanonical",
                "instantiatesUri",
                "basedOn",
                "groupIdentifier",
                "partOf",
                "status",
                "statusReason",
                "businessStatus",
                "intent",
                "priority",
                "code",
                "description",
                "focus",
                "for",
                "encounter",
                "executionPeriod",
                "authoredOn",
                "lastModified",
                "requester",
                "performerType",
                "owner",
                "location",
                "reasonCode",
                "reasonReference",
                "insurance",
            }
        )
    }
)


@dataclass(frozen=True)
class Elements:
    """Which top-level elements to keep (`keep`) or drop (`drop`) of every matched resource."""

    keep: frozenset[str] | None = None
    drop: frozenset[str] = frozenset()

    @classmethod
    def summary(cls, resource_type: str, mode: str) -> Elements | None:
        """The subset `_summary=mode` asks for (None: the whole resource)."""
        mandatory = _MANDATORY.get(resource_type, frozenset())
        if mode == "true":
            return cls(keep=_SUMMARY.get(resource_type, frozenset()) | mandatory)
        if mode == "text":
            return cls(keep=frozenset({"text"}) | mandatory)
        if mode == "data":
            return cls(drop=frozenset({"text"}))
        return None

    @classmethod
    def listed(cls, resource_type: str, text: str) -> Elements:
        """The subset `_elements=a,b` asks for."""
        names = frozenset(name.strip() for name in text.split(",") if name.strip())
        if not names or any(not name.isidentifier() for name in names):
            raise SearchParameterError(f"_elements={text!r}: list top-level element names")
        return cls(keep=names | _MANDATORY.get(resource_type, frozenset()))

    def apply(self, resource: JsonObject) -> JsonObject:
        """The resource reduced to this subset, tagged SUBSETTED."""
        kept = {
            name: value
            for name, value in resource.items()
            if name in _ALWAYS
            or (
                (self.keep is None or name.lstrip("_") in self.keep)
                and name.lstrip("_") not in self.drop
            )
        }
        meta = dict(kept.get("meta") or {})
        tags = [tag for tag in meta.get("tag") or () if tag != SUBSETTED]
        meta["tag"] = [*tags, SUBSETTED]
        kept["meta"] = meta
        return kept

"""Structural validation of FHIR JSON resources against the R4 element definitions.

What a client writes is checked before it is stored, so that everything stored can be served
back as JSON and XML and sent to every subscriber: known elements only, arrays where the element
repeats and single values where it does not, primitives of the right JSON type and format, no
control characters, contained resources of known types, bounded nesting and string length, and
narrative XHTML without active content. Required elements (minimum cardinality) are not
known to this table and stay the business of each resource's own checks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from lxml import etree

from herald.core.errors import InvalidResource
from herald.core.fhir import ID_PATTERN, NOT_TEXT
from herald.core.fhirxml import XHTML, FhirXml, safe_parser

MAX_DEPTH = 40
"""Nesting of objects and arrays in one resource (real resources stay under 15)."""
MAX_STRING_LENGTH = 64 * 1024
"""Characters in one string (base64Binary excepted; the body limit bounds it)."""

_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_MONTH = r"(0[1-9]|1[0-2])"
_DAY = r"(0[1-9]|[1-2][0-9]|3[0-1])"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
_ZONE = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
# http://hl7.org/fhir/R4/datatypes.html: the regular expression of each primitive type (the
# id's is the one core.fhir checks logical ids with).
_FORMATS: dict[str, re.Pattern[str]] = {"id": ID_PATTERN} | {
    name: re.compile(pattern)
    for name, pattern in {
        "code": r"[^\s]+(\s[^\s]+)*",
        "uri": r"\S+",
        "url": r"\S+",
        "canonical": r"\S+",
        "oid": r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+",
        "uuid": r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "date": rf"{_YEAR}(-{_MONTH}(-{_DAY})?)?",
        "dateTime": rf"{_YEAR}(-{_MONTH}(-{_DAY}(T{_TIME}{_ZONE})?)?)?",
        "instant": rf"{_YEAR}-{_MONTH}-{_DAY}T{_TIME}{_ZONE}",
        "time": _TIME,
        "base64Binary": r"[A-Za-z0-9+/=\s]*",
    }.items()
}
_INTEGER_RANGES = {
    "integer": (-(2**31), 2**31 - 1),
    "positiveInt": (1, 2**31 - 1),
    "unsignedInt": (0, 2**31 - 1),
}

# Narrative (http://hl7.org/fhir/R4/narrative.html, txt-1 and txt-3): basic HTML formatting
# only; no scripts, forms, frames, objects, styles sheets or event handlers.
_ACTIVE_ELEMENTS = frozenset(
    {
        "script", "style", "iframe", "frame", "frameset", "object", "embed", "applet", "form",
        "input", "button", "select", "textarea", "base", "link", "meta", "head", "body", "html",
        "svg", "math", "template", "noscript", "audio", "video", "source", "track", "canvas",
    }
)  # fmt: skip
_URL_ATTRIBUTES = frozenset({"href", "src", "cite", "longdesc", "usemap"})
_SAFE_URL = re.compile(r"(https?:|mailto:|#|/|\.|[A-Za-z0-9_\-]+(/|$|\.|#|\?))", re.IGNORECASE)


_CONTAINERS = (dict, list)


def check_depth(value: object, limit: int = MAX_DEPTH) -> None:
    """Refuse a JSON value nested deeper than `limit` objects and arrays (iteratively)."""
    # Level by level, keeping only the objects and arrays: strings and numbers, most of a
    # resource, are looked at once and never queued.
    level = [value] if isinstance(value, _CONTAINERS) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            raise InvalidResource(f"the resource is nested deeper than {limit} levels")
        level = [
            child
            for current in level
            for child in (current.values() if isinstance(current, dict) else current)
            if isinstance(child, _CONTAINERS)
        ]


def validate_structure(resource: dict[str, Any], definitions: FhirXml) -> None:
    """Raise InvalidResource (with the element's path) where the resource breaks R4's structure
    (`definitions`: the R4 element definitions, as FHIR XML holds them)."""
    check_depth(resource)
    type_name = resource.get("resourceType")
    if not isinstance(type_name, str) or not definitions.is_resource_type(type_name):
        raise InvalidResource(f"unknown resourceType {str(type_name)[:64]!r}")
    _Walk(definitions).resource(resource, type_name, type_name)


class _Walk:
    """One walk over a resource, by the element definitions it was given."""

    def __init__(self, definitions: FhirXml) -> None:
        self.definitions = definitions

    def resource(self, value: object, path: str, expected: str | None = None) -> None:
        """Check a resource (of type `expected` when given)."""
        if not isinstance(value, dict):
            raise InvalidResource("a resource must be a JSON object", expression=path)
        type_name = value.get("resourceType")
        if not isinstance(type_name, str) or not self.definitions.is_resource_type(type_name):
            raise InvalidResource(
                f"unknown resourceType {str(type_name)[:64]!r}", expression=f"{path}.resourceType"
            )
        if expected is not None and type_name != expected:
            raise InvalidResource(f"expected a {expected}", expression=path)
        self.complex(value, type_name, path, resource=True)

    def complex(self, value: object, type_name: str, path: str, *, resource: bool = False) -> None:
        """Check a value of a complex type (or a resource's content)."""
        if not isinstance(value, dict):
            raise InvalidResource(f"{path} must be a JSON object ({type_name})", expression=path)
        if not value:
            raise InvalidResource(f"{path} must not be empty", expression=path)
        definitions = self.definitions.element_definitions(type_name)
        for key, item in value.items():
            if key == "resourceType" and resource:
                continue
            name = key[1:] if key[:1] == "_" else key
            definition = definitions.get(name)
            where = f"{path}.{name}"
            if definition is None:
                raise InvalidResource(
                    f"unknown element {key[:64]!r} in {type_name}", expression=where
                )
            child_type, repeats = definition
            if key[:1] == "_":
                if not child_type[0].islower():
                    raise InvalidResource(f"{key} is not a primitive's extension", expression=where)
                _each(item, repeats, where, self._complex_check("Element"), nullable=True)
            elif not repeats and child_type != "Resource":
                # One value (most elements): checked here, without _each and a check closure.
                if isinstance(item, list):
                    raise InvalidResource(
                        f"{where} does not repeat: expected one value", expression=where
                    )
                if child_type[0].islower():
                    _primitive(item, child_type, where)
                else:
                    self.complex(item, child_type, where)
            elif child_type[0].islower():
                _each(item, repeats, where, _primitive_check(child_type), nullable=repeats)
            elif child_type == "Resource":
                _each(item, repeats, where, self.resource)
            else:
                _each(item, repeats, where, self._complex_check(child_type))

    def _complex_check(self, type_name: str) -> Callable[[Any, str], None]:
        def check(value: object, path: str) -> None:
            self.complex(value, type_name, path)

        return check


def _each(
    value: object,
    repeats: bool,
    path: str,
    check: Callable[[Any, str], None],
    *,
    nullable: bool = False,
) -> None:
    if not repeats:
        if isinstance(value, list):
            raise InvalidResource(f"{path} does not repeat: expected one value", expression=path)
        check(value, path)
        return
    if not isinstance(value, list) or not value:
        raise InvalidResource(f"{path} repeats: expected a non-empty array", expression=path)
    for position, item in enumerate(value):
        if item is None and nullable:
            continue  # a gap that the primitive's `_name` array fills
        check(item, f"{path}[{position}]")


def _primitive_check(type_name: str) -> Callable[[Any, str], None]:
    def check(value: object, path: str) -> None:
        _primitive(value, type_name, path)

    return check


def _primitive(value: object, type_name: str, path: str) -> None:
    if type_name == "boolean":
        if not isinstance(value, bool):
            raise InvalidResource(f"{path} must be true or false", expression=path)
        return
    if type_name in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[type_name]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise InvalidResource(f"{path} must be a {type_name}", expression=path)
        return
    if type_name == "decimal":
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise InvalidResource(f"{path} must be a decimal number", expression=path)
        return
    if not isinstance(value, str):
        raise InvalidResource(f"{path} must be a string ({type_name})", expression=path)
    if not value:
        raise InvalidResource(f"{path} must not be empty", expression=path)
    if type_name != "base64Binary" and len(value) > MAX_STRING_LENGTH:
        raise InvalidResource(
            f"{path} is longer than {MAX_STRING_LENGTH} characters", expression=path
        )
    if NOT_TEXT.search(value):
        raise InvalidResource(f"{path} holds a control character", expression=path)
    pattern = _FORMATS.get(type_name)
    if pattern is not None and not pattern.fullmatch(value):
        raise InvalidResource(f"{path} is not a valid {type_name}: {value[:64]!r}", expression=path)
    if type_name == "xhtml":
        check_narrative(value, path)


def check_narrative(div: str, path: str) -> None:
    """Refuse narrative XHTML that is not a well-formed XHTML div or that has active content."""
    try:
        root = etree.fromstring(div.encode(), safe_parser())
    except etree.XMLSyntaxError as exc:
        raise InvalidResource(f"{path} is not well-formed XHTML: {exc}", expression=path) from exc
    if root.tag != f"{{{XHTML}}}div":
        raise InvalidResource(f"{path} must be an XHTML div", expression=path)
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        qname = etree.QName(element)
        if qname.namespace != XHTML or qname.localname.lower() in _ACTIVE_ELEMENTS:
            raise InvalidResource(
                f"{path} may not hold <{qname.localname}> (no active content in narrative)",
                expression=path,
            )
        for attribute, attribute_value in element.attrib.items():
            name = etree.QName(attribute).localname.lower()
            if name.startswith("on"):
                raise InvalidResource(
                    f"{path} may not hold event attributes ({name})", expression=path
                )
            if name in _URL_ATTRIBUTES and not _SAFE_URL.match(str(attribute_value).strip()):
                raise InvalidResource(
                    f"{path} may only link to http(s), mailto or relative URLs", expression=path
                )

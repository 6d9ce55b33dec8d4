"""FHIR XML: writing resources as XML and reading them back into FHIR JSON, with lxml.

The rules (http://hl7.org/fhir/R4/xml.html): one namespace, primitives as `value` attributes,
elements in the order of the R4 definitions (r4-elements.json, which the runtime hands over),
primitive extensions inside the primitive's element, `id` of an element and `url` of an Extension as
attributes, resources inside a wrapper element, narrative as XHTML. Reading refuses DTDs and
entities and never touches the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lxml import etree

from herald.core.errors import InvalidResource
from herald.core.types import JsonObject

NS = "http://hl7.org/fhir"
XHTML = "http://www.w3.org/1999/xhtml"

_INTEGERS = frozenset({"integer", "positiveInt", "unsignedInt"})
Element = tuple[str, bool]  # (type name, repeats)


class FhirXml:
    """FHIR XML in both directions, by the R4 element definitions it is given."""

    def __init__(self, definitions: Mapping[str, Any]) -> None:
        """`definitions`: the parsed r4-elements.json (scripts/fhir_structure.py writes it)."""
        self._types: dict[str, dict[str, Element]] = {
            name: {e[0]: (e[1], bool(e[2])) for e in elements}
            for name, elements in definitions["types"].items()
        }

    def to_xml(self, resource: JsonObject) -> bytes:
        """Serialise a FHIR JSON resource as FHIR XML (UTF-8, with an XML declaration)."""
        root = self._resource_element(resource)
        return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))

    def from_xml(self, data: bytes) -> JsonObject:
        """Parse a FHIR XML resource into FHIR JSON; InvalidResource when it is not one."""
        try:
            tree = etree.ElementTree(etree.fromstring(data, safe_parser()))
        except etree.XMLSyntaxError as exc:
            raise InvalidResource(f"the body is not well-formed XML: {exc}") from exc
        if getattr(tree.docinfo, "doctype", "") or tree.docinfo.internalDTD is not None:
            raise InvalidResource("XML with a DOCTYPE is not accepted")
        return self._read_resource(tree.getroot())

    def element_definitions(self, type_name: str) -> dict[str, Element]:
        """The elements of an R4 type by name: (type name, repeats)."""
        return self._types[type_name]

    def is_resource_type(self, type_name: str) -> bool:
        """Whether the name is an R4 resource type."""
        elements = self._types.get(type_name)
        return elements is not None and elements.get("id") == ("id", False)

    def _resource_element(self, resource: JsonObject) -> etree._Element:
        type_name = resource.get("resourceType")
        if not isinstance(type_name, str) or not self.is_resource_type(type_name):
            raise ValueError(f"not a FHIR resource type: {type_name!r}")
        element = etree.Element(f"{{{NS}}}{type_name}", nsmap={None: NS})  # type: ignore[dict-item]
        self._write_content(element, type_name, resource)
        return element

    def _write_content(self, element: etree._Element, type_name: str, value: JsonObject) -> None:
        resource = self.is_resource_type(type_name)
        for name, (child_type, _repeats) in self._types[type_name].items():
            if name == "id" and not resource:
                if isinstance(value.get("id"), str):
                    element.set("id", value["id"])
                continue
            if name == "url" and type_name == "Extension":
                if isinstance(value.get("url"), str):
                    element.set("url", value["url"])
                continue
            present, extras = value.get(name), value.get(f"_{name}")
            if present is None and extras is None:
                continue
            if _is_primitive(child_type):
                self._write_primitives(element, name, child_type, present, extras)
                continue
            items: list[Any] = present if isinstance(present, list) else [present]
            for item in items:
                child = etree.SubElement(element, f"{{{NS}}}{name}")
                if child_type == "Resource":
                    child.append(self._resource_element(item))
                else:
                    self._write_content(child, child_type, item)

    def _write_primitives(
        self, element: etree._Element, name: str, type_name: str, values: Any, extras: Any
    ) -> None:
        if isinstance(values, list) or isinstance(extras, list):
            values = values if isinstance(values, list) else [None] * len(extras)
            extras = extras if isinstance(extras, list) else [None] * len(values)
        else:
            values, extras = [values], [extras]
        for value, extra in zip(values, extras, strict=False):
            if type_name == "xhtml":
                element.append(etree.fromstring(str(value).encode(), safe_parser()))
                continue
            child = etree.SubElement(element, f"{{{NS}}}{name}")
            if isinstance(extra, dict):
                if isinstance(extra.get("id"), str):
                    child.set("id", extra["id"])
                for extension in extra.get("extension") or []:
                    node = etree.SubElement(child, f"{{{NS}}}extension")
                    self._write_content(node, "Extension", extension)
            if value is not None:
                child.set("value", _text(value))

    def _read_resource(self, element: etree._Element) -> JsonObject:
        namespace, type_name = _local(element)
        if namespace != NS:
            raise InvalidResource(f"the root element must be in the namespace {NS}")
        if not self.is_resource_type(type_name):
            raise InvalidResource(f"{type_name!r} is not a FHIR resource type")
        return {"resourceType": type_name, **self._read_content(element, type_name)}

    def _read_content(self, element: etree._Element, type_name: str) -> JsonObject:
        definitions = self._types[type_name]
        result: JsonObject = {}
        for key, attribute_value in element.attrib.items():
            attribute = str(key)
            if attribute == "id" and not self.is_resource_type(type_name):
                result["id"] = attribute_value
            elif attribute == "url" and type_name == "Extension":
                result["url"] = attribute_value
            elif not (type_name in ("Resource",) or attribute.startswith("{")):
                raise InvalidResource(f"unexpected attribute {attribute!r} on {type_name}")
        primitive_lists: dict[str, tuple[list[Any], list[Any]]] = {}
        for child in element:
            namespace, name = _local(child)
            if name not in definitions:
                raise InvalidResource(f"unknown element {name!r} in {type_name}")
            child_type, repeats = definitions[name]
            if child_type == "xhtml":
                if namespace != XHTML:
                    raise InvalidResource(f"{type_name}.{name} must be XHTML")
                _put(result, name, etree.tostring(child, encoding=str), repeats=False)
                continue
            if namespace != NS:
                raise InvalidResource(f"element {name!r} is not in the namespace {NS}")
            if _is_primitive(child_type):
                value, extra = self._read_primitive(child, child_type)
                if repeats:
                    values, extras = primitive_lists.setdefault(name, ([], []))
                    values.append(value)
                    extras.append(extra)
                else:
                    _put(result, name, value, repeats=False, skip_none=True)
                    _put(result, f"_{name}", extra, repeats=False, skip_none=True)
                continue
            if child_type == "Resource":
                inner = [c for c in child if isinstance(c.tag, str)]
                if len(inner) != 1:
                    raise InvalidResource(f"{type_name}.{name} must hold exactly one resource")
                _put(result, name, self._read_resource(inner[0]), repeats=repeats)
            else:
                _put(result, name, self._read_content(child, child_type), repeats=repeats)
        for name, (values, extras) in primitive_lists.items():
            if any(v is not None for v in values):
                result[name] = values
            if any(e is not None for e in extras):
                result[f"_{name}"] = extras
        return result

    def _read_primitive(
        self, element: etree._Element, type_name: str
    ) -> tuple[Any, JsonObject | None]:
        raw = element.get("value")
        extra: JsonObject = {}
        if element.get("id") is not None:
            extra["id"] = element.get("id")
        extensions = []
        for child in element:
            namespace, name = _local(child)
            if namespace != NS or name != "extension":
                raise InvalidResource(f"unexpected element {name!r} inside a primitive")
            extensions.append(self._read_content(child, "Extension"))
        if extensions:
            extra["extension"] = extensions
        if raw is None and not extra:
            raise InvalidResource(f"element {etree.QName(element).localname!r} has no value")
        return (None if raw is None else _convert(raw, type_name)), (extra or None)


def _is_primitive(type_name: str) -> bool:
    return type_name[0].islower()


def safe_parser() -> etree.XMLParser:
    """An XML parser that loads no DTD, resolves no entity and never touches the network."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


# --- writing -----------------------------------------------------------------------------------


def _text(value: object) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


# --- reading -----------------------------------------------------------------------------------


def _local(element: etree._Element) -> tuple[str | None, str]:
    qname = etree.QName(element)
    return qname.namespace, qname.localname


def _put(
    result: JsonObject, name: str, value: Any, *, repeats: bool, skip_none: bool = False
) -> None:
    if value is None and skip_none:
        return
    if repeats:
        result.setdefault(name, []).append(value)
    elif name in result:
        raise InvalidResource(f"element {name!r} appears more than once")
    else:
        result[name] = value


def _convert(raw: str, type_name: str) -> Any:
    try:
        if type_name == "boolean":
            if raw not in ("true", "false"):
                raise ValueError(raw)
            return raw == "true"
        if type_name in _INTEGERS:
            return int(raw)
        if type_name == "decimal":
            number = float(raw)
            return (
                int(number)
                if number.is_integer() and "." not in raw and "e" not in raw.lower()
                else number
            )
    except ValueError as exc:
        raise InvalidResource(f"{raw!r} is not a valid {type_name}") from exc
    return raw

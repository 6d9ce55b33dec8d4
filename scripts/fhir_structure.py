"""Regenerate schemas/fhir/r4-elements.json: the element order and types of every FHIR R4 type.

Herald's XML writer and reader need, for each type, its elements in definition order with their
type and whether they repeat. This script reads them from the FHIR R4 (4.0.1) models of
fhir.resources 6.4 (generated from the official StructureDefinitions). Run it in a scratch
virtualenv, not Herald's (those versions pin pydantic 1):

    venv=$(mktemp -d) && python3 -m venv "$venv"
    "$venv/bin/pip" install "fhir.resources==6.4.0" "pydantic<2"
    "$venv/bin/python" scripts/fhir_structure.py > schemas/fhir/r4-elements.json
"""

from __future__ import annotations

import json
import sys
import typing
from typing import Any

from fhir.resources import (  # type: ignore[import-not-found]
    __fhir_version__,
    __version__,
    fhirtypes,
    get_fhir_model_class,
)


def _type_name(kind: Any) -> str:
    # Lists of primitives are typed List[Optional[String]] (the JSON arrays may hold nulls).
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if args:
        kind = args[0]
    if kind is bool:
        return "boolean"
    resource_type = getattr(kind, "__resource_type__", None)
    if resource_type is not None:
        return str(resource_type)
    name = kind.__name__
    return name[0].lower() + name[1:]


def _elements(model: Any) -> list[list[Any]]:
    by_alias = {field.alias: field for field in model.__fields__.values()}
    rows = []
    for name in model.elements_sequence():
        field = by_alias[name]
        repeats = getattr(field.outer_type_, "__origin__", None) is list
        rows.append([name, _type_name(field.type_), 1 if repeats else 0])
    return rows


def main() -> None:
    """Print the structure of every type as JSON."""
    types: dict[str, list[list[Any]]] = {}
    for attribute in dir(fhirtypes):
        kind = getattr(fhirtypes, attribute)
        name = getattr(kind, "__resource_type__", None)
        if not attribute.endswith("Type") or not isinstance(name, str) or name in types:
            continue
        try:
            model = get_fhir_model_class(name)
        except (KeyError, ValueError):
            continue  # an abstract type (Resource, Element...) with no model of its own
        types[name] = _elements(model)
    out = {
        "source": f"fhir.resources {__version__} (FHIR {__fhir_version__})",
        "types": dict(sorted(types.items())),
    }
    json.dump(out, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

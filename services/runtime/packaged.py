"""The data Herald ships inside its package, read through importlib.resources.

The folder `schemas/` of the source tree is the package `herald.schemas` (see pyproject.toml),
so a built wheel carries it: the SubscriptionTopics, the FHIR R4 element definitions, the JSON
Schemas of the bus records and of the Canvas snapshot. Core never opens a file; the runtime
reads the data here and hands it to core.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from herald.core.errors import TopicDefinitionError
from herald.core.fhirxml import FhirXml
from herald.core.topics import TopicCatalog

SCHEMAS: Traversable = files("herald") / "schemas"
"""The root of the shipped data (topics/, fhir/, kafka/, canvas/)."""


def _json_files(folder: Traversable | Path) -> list[Traversable | Path]:
    return sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".json") and entry.is_file()),
        key=lambda entry: entry.name,
    )


def _documents(entries: Iterable[Traversable | Path]) -> Iterator[tuple[str, Any]]:
    for entry in entries:
        try:
            yield entry.name, json.loads(entry.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise TopicDefinitionError(f"{entry.name}: {exc}") from exc


def load_topics(directory: Path | None = None) -> TopicCatalog:
    """The topics of a folder of topic files; the topics Herald ships when `directory` is None."""
    folder: Traversable | Path = SCHEMAS / "topics" if directory is None else directory
    if directory is not None and not directory.is_dir():
        raise TopicDefinitionError(f"no topic files in {directory}: it is not a folder")
    entries = _json_files(folder)
    if not entries:
        raise TopicDefinitionError(f"no topic files in {directory or 'the package'}")
    return TopicCatalog.from_documents(_documents(entries))


def json_document(*parts: str) -> Any:
    """A JSON file of the shipped data, e.g. json_document("kafka", "resource-change.v1.json")."""
    entry = SCHEMAS.joinpath(*parts)
    return json.loads(entry.read_text(encoding="utf-8"))


@functools.cache
def fhir_xml() -> FhirXml:
    """FHIR XML by the shipped R4 element definitions (read once per process)."""
    return FhirXml(json_document("fhir", "r4-elements.json"))

"""What the CLI says about settings: per-command help, one-line errors, masked values, sources.

All of it is generated from the fields of `Settings`, so it cannot go stale.
"""

from __future__ import annotations

import os
import sys
import textwrap
import types
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn, Union, get_args, get_origin

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from herald.runtime.settings import ENV_PREFIX, Settings, mask_url_password

# Exit status of a usage or configuration error (as argparse uses).
USAGE_ERROR = 2


def env_name(field: str) -> str:
    """The environment variable of a settings field."""
    return f"{ENV_PREFIX}{field.upper()}"


def _extra(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def fields_read_by(command: str) -> list[tuple[str, FieldInfo]]:
    """The settings a command reads, in the model's order (`config` shows them all)."""
    return [
        (name, info)
        for name, info in Settings.model_fields.items()
        if command == "config" or command in _extra(info).get("roles", ())
    ]


def _bounds(info: FieldInfo) -> str:
    words = []
    for item in info.metadata:
        for attr, word in (("ge", "from"), ("gt", "above"), ("le", "to"), ("lt", "below")):
            value = getattr(item, attr, None)
            if value is not None:
                words.append(f"{word} {value:g}")
    return " " + " ".join(words) if words else ""


def allowed(info: FieldInfo) -> str:
    """What a setting accepts, in words."""
    stated = _extra(info).get("allowed")
    if stated:
        return str(stated)
    annotation = info.annotation
    optional = False
    if get_origin(annotation) in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(inner) < len(get_args(annotation))
        annotation = inner[0]
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        text = "one of " + ", ".join(str(m.value) for m in annotation)
    elif annotation is bool:
        text = "true or false"
    elif annotation is int:
        text = "an integer" + _bounds(info)
    elif annotation is float:
        text = "a number" + _bounds(info)
    elif annotation is Path:
        text = "a path"
    else:
        text = "text"
    return f"{text}, or unset" if optional else text


def shown(field: str, value: object) -> str:
    """A setting's value as the CLI may print it: secrets masked, passwords out of URLs."""
    if value is None:
        return "(unset)"
    info = Settings.model_fields.get(field)
    if info is not None and _extra(info).get("secret"):
        return "***"
    text = str(value.value) if isinstance(value, Enum) else str(value)
    return mask_url_password(text) if "://" in text else text


def _environment(field: str) -> str | None:
    name = env_name(field)
    return next((v for k, v in os.environ.items() if k.upper() == name), None)


def source(field: str) -> str:
    """Where a setting's value comes from: its environment variable or the default."""
    return "default" if _environment(field) is None else "environment"


def epilog(command: str) -> str:
    """The help text listing the HERALD_* settings a command reads, with defaults."""
    read = fields_read_by(command)
    if not read:
        return "reads no HERALD_* settings"
    lines = ["settings (environment variables):"]
    for name, info in read:
        default = "unset" if info.default is None else shown(name, info.default)
        lines.append(f"  {env_name(name)} (default: {default})")
        kind = allowed(info)
        text = f"{info.description}" + ("" if kind.startswith("text") else f"; {kind}")
        lines += textwrap.wrap(text, 96, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


def error_lines(error: ValidationError) -> list[str]:
    """One line per invalid setting: its name, its value (masked), what is allowed."""
    lines = []
    for problem in error.errors():
        field = str(problem["loc"][0]) if problem["loc"] else ""
        info = Settings.model_fields.get(field)
        if info is None:
            lines.append(f"herald: invalid settings: {problem['msg']}")
            continue
        reason = ""
        if problem["type"] == "value_error":
            reason = f" ({problem['ctx']['error']})"
        given = _environment(field)
        value = shown(field, problem["input"] if given is None else given)
        lines.append(
            f"herald: {env_name(field)}={value!r} is not valid{reason}; allowed: {allowed(info)}"
        )
    return lines


def load_settings() -> Settings:
    """The settings from the environment; an invalid one ends the process with one line each."""
    try:
        return Settings()
    except ValidationError as error:
        fail(error_lines(error))


def fail(lines: list[str]) -> NoReturn:
    """Print the lines to stderr and exit with the usage-error status."""
    for line in lines:
        print(line, file=sys.stderr)
    sys.exit(USAGE_ERROR)

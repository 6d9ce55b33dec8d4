"""Small FHIR R4 helpers: instants, ids, OperationOutcome, code systems Herald checks."""

from __future__ import annotations

import functools
import re
import secrets
import time
from datetime import UTC, datetime

from herald.core.types import JsonObject

FHIR_VERSION = "4.0.1"
FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"

# http://hl7.org/fhir/R4/valueset-task-status.html
TASK_STATUS_CODES = frozenset(
    {
        "draft",
        "requested",
        "received",
        "accepted",
        "rejected",
        "ready",
        "cancelled",
        "in-progress",
        "on-hold",
        "failed",
        "completed",
        "entered-in-error",
    }
)
# http://hl7.org/fhir/R4/valueset-task-intent.html
TASK_INTENT_CODES = frozenset(
    {
        "unknown",
        "proposal",
        "plan",
        "order",
        "original-order",
        "reflex-order",
        "filler-order",
        "instance-order",
        "option",
    }
)

# http://hl7.org/fhir/R4/datatypes.html#id
# Matched in full: `$` alone would let a trailing newline through.
ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def is_valid_id(value: object) -> bool:
    """True when value is a FHIR logical id."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


# ASCII digits only (str.isdigit also takes "²"), and few enough to fit a 64-bit column.
_WHOLE_NUMBER = re.compile(r"[0-9]{1,18}")


def whole_number(text: str) -> int | None:
    """A non-negative whole number written in ASCII digits (at most 18), else None."""
    return int(text) if _WHOLE_NUMBER.fullmatch(text) else None


def new_id() -> str:
    """A fresh logical id: a random (version 4) UUID as text, a valid FHIR id.

    The same text as str(uuid.uuid4()), at about a quarter of its cost (notifications make two
    ids each)."""
    h = secrets.token_hex(16)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def format_instant(moment: datetime) -> str:
    """A FHIR instant with millisecond precision and a Z zone."""
    # isoformat truncates to milliseconds as FHIR wants, at a third of strftime's cost (several
    # instants are formatted per Task); in UTC it always ends in "+00:00".
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


@functools.lru_cache(maxsize=4)
def utc_second(second: int) -> str:
    """The UTC date and time of a Unix second (`2026-01-01T00:00:00`): instants stamped many
    times a second format it once per second."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def now_instant() -> str:
    """The current time as a FHIR instant, as format_instant(utc_now()) writes it, at a
    quarter of the cost (every notification is stamped)."""
    second, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    return f"{utc_second(second)}.{nanoseconds // 1_000_000:03d}Z"


# Characters neither FHIR strings nor XML 1.0 may hold: control characters other than tab, CR
# and LF, non-characters and lone surrogates (a client's input echoed in a message).
NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def operation_outcome(
    diagnostics: str,
    *,
    severity: str = "error",
    code: str = "invalid",
    expression: str | None = None,
) -> JsonObject:
    """An OperationOutcome with one issue."""
    issue: JsonObject = {
        "severity": severity,
        "code": code,
        "diagnostics": NOT_TEXT.sub("\ufffd", diagnostics),
    }
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}

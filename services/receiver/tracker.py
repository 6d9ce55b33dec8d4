"""What a subscriber makes of each notification: a readable line, and which events it missed.

Pure: no I/O. The tracker keeps the last event number seen per subscription and compares every
notification with it, as the Subscriptions Backport IG asks a subscriber to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from herald.core.types import JsonObject

_INTERACTION = {"POST": "create", "PUT": "update", "DELETE": "delete"}


@dataclass(frozen=True)
class Event:
    """One event a notification carries."""

    number: int
    focus: str
    """Relative reference of the resource that changed (empty for empty content)."""
    interaction: str

    def describe(self) -> str:
        """`#3 Task/t1 update`."""
        return " ".join(p for p in (f"#{self.number}", self.focus, self.interaction) if p)


@dataclass(frozen=True)
class Notification:
    """The status Parameters of a notification Bundle, read."""

    subscription: str
    """The subscription's absolute URL (`<base>/Subscription/<id>`)."""
    kind: str
    status: str
    events_since_start: int
    events: tuple[Event, ...]
    error: str | None = None

    @property
    def subscription_id(self) -> str:
        """The subscription's id."""
        return self.subscription.rsplit("/", 1)[-1]

    @property
    def base(self) -> str:
        """The FHIR base URL the subscription lives at."""
        return self.subscription.rsplit("/Subscription/", 1)[0]


def _value(parameter: JsonObject) -> object:
    return next((v for k, v in parameter.items() if k.startswith("value")), None)


def _relative(reference: str) -> str:
    parts = reference.rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else reference


def read_notification(bundle: JsonObject) -> Notification:
    """Read a notification (or $events) Bundle; ValueError when it is not one."""
    entries = bundle.get("entry") or []
    if bundle.get("resourceType") != "Bundle" or not entries:
        raise ValueError("not a Bundle with a status entry")
    status = entries[0].get("resource") or {}
    if status.get("resourceType") != "Parameters":
        raise ValueError("the first entry is not the status Parameters")
    values: dict[str, object] = {}
    events: list[Event] = []
    for parameter in status.get("parameter", []):
        name = parameter.get("name")
        if name == "notification-event":
            parts = {p.get("name"): _value(p) for p in parameter.get("part", [])}
            focus = parts.get("focus")
            reference = focus.get("reference", "") if isinstance(focus, dict) else ""
            events.append(Event(int(str(parts.get("event-number"))), _relative(reference), ""))
        elif name == "error":
            error = _value(parameter)
            values["error"] = error.get("text") if isinstance(error, dict) else error
        else:
            value = _value(parameter)
            values[str(name)] = value.get("reference") if isinstance(value, dict) else value
    # Event entries follow the status entry in event order (none for empty content).
    # A PUT answered 201 created the resource (update-as-create).
    methods = [
        "POST"
        if (e.get("response") or {}).get("status", "").startswith("201")
        else (e.get("request") or {}).get("method", "")
        for e in entries[1:]
    ]
    if len(methods) == len(events):
        events = [
            Event(e.number, e.focus, _INTERACTION.get(m, ""))
            for e, m in zip(events, methods, strict=True)
        ]
    return Notification(
        subscription=str(values.get("subscription", "")),
        kind=str(values.get("type", "")),
        status=str(values.get("status", "")),
        events_since_start=int(str(values.get("events-since-subscription-start") or 0)),
        events=tuple(events),
        error=None if values.get("error") is None else str(values["error"]),
    )


@dataclass(frozen=True)
class Verdict:
    """What the tracker makes of one notification."""

    line: str
    """One readable line."""
    missing: tuple[int, int] | None = None
    """First and last number of events missed, to fetch from $events."""


@dataclass
class Tracker:
    """The last event number seen per subscription (by absolute URL)."""

    last: dict[str, int] = field(default_factory=dict)

    def see(self, note: Notification) -> Verdict:
        """Take in a notification: its line and the events missed before it.

        A subscription not seen before counts as seen up to 0, so a receiver started late (or
        restarted) fetches what it missed as well.
        """
        last = self.last.get(note.subscription, 0)
        head = f"{note.kind} Subscription/{note.subscription_id}"
        status = f"status={note.status}" + (f" error={note.error!r}" if note.error else "")
        notes: list[str] = []
        if note.events_since_start < last:
            notes.append(
                f"restart: the server counts {note.events_since_start} events where "
                f"{last} were seen; counting again"
            )
            last = 0
        missing: tuple[int, int] | None = None
        if not note.events:
            # Handshake or heartbeat: events-since-subscription-start says where we should be.
            if note.events_since_start > last:
                missing = (last + 1, note.events_since_start)
                last = note.events_since_start
            text = f"{head} events-since-start={note.events_since_start} {status}"
        else:
            described = []
            for event in note.events:
                if event.number <= last:
                    described.append(f"{event.describe()} (duplicate)")
                    continue
                if event.number > last + 1 and missing is None:
                    missing = (last + 1, event.number - 1)
                described.append(event.describe())
                last = event.number
            text = f"{head} {', '.join(described)} {status}"
        self.last[note.subscription] = last
        if missing is not None:
            first, last_missed = missing
            span = f"#{first}" if first == last_missed else f"#{first}..#{last_missed}"
            notes.append(f"gap: missed {span}, fetching from $events")
        return Verdict("; ".join([text, *notes]), missing)

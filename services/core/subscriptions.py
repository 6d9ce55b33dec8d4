"""The backport Subscription (R4): validating what a client sends; Herald's parsed view of it."""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from herald.core.addresses import Address, Network, refusal
from herald.core.errors import FhirError, InvalidSubscription, SearchParameterError
from herald.core.fhir import FHIR_JSON, FHIR_XML, is_valid_id
from herald.core.search import Criteria, parse_filter
from herald.core.states import CLIENT_STATUSES, SubscriptionStatus
from herald.core.topics import Topic, TopicCatalog
from herald.core.types import JsonObject

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
FILTER_CRITERIA_URL = BACKPORT + "backport-filter-criteria"
PAYLOAD_CONTENT_URL = BACKPORT + "backport-payload-content"
HEARTBEAT_PERIOD_URL = BACKPORT + "backport-heartbeat-period"
TIMEOUT_URL = BACKPORT + "backport-timeout"
MAX_COUNT_URL = BACKPORT + "backport-max-count"
SUBSCRIPTION_PROFILE = BACKPORT + "backport-subscription"

CONTENT_CODES = ("empty", "id-only", "full-resource")
STATUSES = frozenset(SubscriptionStatus)
SUPPORTED_PAYLOADS = (FHIR_JSON, FHIR_XML)
SUPPORTED_FHIR_VERSIONS = frozenset({"4.0", "4.0.1"})

# Bounds on the channel extensions. A heartbeat under 10 s or a timeout over 2 min would let one
# subscriber tie up a delivery slot; max-count caps the size of one Bundle.
HEARTBEAT_RANGE = (10, 86_400)
TIMEOUT_RANGE = (1, 120)
MAX_COUNT_RANGE = (1, 1000)
DEFAULT_TIMEOUT = 10
DEFAULT_MAX_COUNT = 100
# Bounds on filters: every change is matched against them, so their size is work per change.
MAX_FILTERS = 20
MAX_FILTER_LENGTH = 2048
MAX_FILTER_VALUES = 100


# A host name as URLs carry it: dot-separated labels of letters, digits, hyphens, underscores.
# Anything else (percent-escapes, spaces) is refused rather than guessed at.
_HOST_NAME = re.compile(r"(?:[\w-]{1,63}\.)*[\w-]{1,63}\.?", re.UNICODE)
_LOCAL_NAMES = ("localhost", "localhost.localdomain")


@dataclass(frozen=True)
class EndpointPolicy:
    """Which endpoints a subscription may name, and which addresses Herald may connect to.

    The address rules are applied where the connection is made (the sender resolves the host
    and connects to the vetted address); `check` refuses at create what is already visible in
    the URL: the scheme, credentials, names and literal addresses that can only be local.
    """

    allow_http: bool = False
    allow_private: bool = False
    allow_hosts: frozenset[str] = frozenset()
    """Host names (lower case, no trailing dot) whose addresses are not checked."""
    allow_networks: tuple[Network, ...] = ()
    """Networks Herald may connect to although they are not public (private partners)."""

    def check(self, endpoint: str) -> None:
        """Raise InvalidSubscription when the endpoint URL breaks the policy."""
        where = "Subscription.channel.endpoint"
        try:
            parts = urlsplit(endpoint)
            port = parts.port
        except ValueError as exc:
            raise InvalidSubscription(
                f"channel.endpoint is not a valid URL: {exc}", expression=where
            ) from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidSubscription(
                f"channel.endpoint must be an absolute http(s) URL, got {endpoint!r}",
                expression=where,
            )
        if parts.username or parts.password:
            raise InvalidSubscription(
                "channel.endpoint must not carry credentials; use channel.header",
                expression=where,
            )
        if parts.scheme == "http" and not self.allow_http:
            raise InvalidSubscription(
                "channel.endpoint must use https (this server does not allow http endpoints)",
                expression=where,
            )
        if port == 0:
            raise InvalidSubscription("channel.endpoint names port 0", expression=where)
        host = parts.hostname
        if literal_address(host) is None and not _HOST_NAME.fullmatch(host):
            raise InvalidSubscription(
                f"channel.endpoint has an invalid host {host!r}", expression=where
            )
        reason = self.host_refusal(host)
        if reason is not None:
            raise InvalidSubscription(
                f"channel.endpoint names a loopback or private address, which this server does "
                f"not allow: {reason} (see HERALD_ENDPOINT_ALLOW)",
                expression=where,
            )

    def allowed_host(self, host: str) -> bool:
        """Whether the host is exempt from the address rules (or the rules are off)."""
        return self.allow_private or host.lower().rstrip(".") in self.allow_hosts

    def host_refusal(self, host: str) -> str | None:
        """Why a host, as written, can only be local; None when it may be public."""
        if self.allowed_host(host):
            return None
        name = host.lower().rstrip(".")
        if name in _LOCAL_NAMES or name.endswith(".localhost"):
            return f"{host} is a loopback name"
        address = literal_address(host)
        return None if address is None else self.address_refusal(host, address)

    def address_refusal(self, host: str, address: Address) -> str | None:
        """Why Herald may not connect to `address` for `host`; None when it may."""
        if self.allowed_host(host) or any(
            address.version == n.version and address in n for n in self.allow_networks
        ):
            return None
        return refusal(address)


def literal_address(host: str) -> Address | None:
    """The address a host written as an IP literal (or an IPv4 shorthand) stands for."""
    try:
        return ipaddress.ip_address(host.strip("[]").rstrip("."))
    except ValueError:
        pass
    try:
        # IPv4 shorthands that resolvers accept as addresses: 127.1, 2130706433, 0x7f000001.
        return ipaddress.IPv4Address(socket.inet_aton(host.rstrip(".")))
    except (OSError, ValueError):
        return None


STORED_POLICY = EndpointPolicy(allow_http=True, allow_private=True)
"""For reading stored subscriptions where no connection follows (matcher, $status)."""


@dataclass(frozen=True)
class Subscription:
    """A validated backport Subscription, as Herald uses it."""

    id: str
    status: str
    topic_url: str
    filters: tuple[str, ...]
    criteria: tuple[Criteria, ...]
    endpoint: str
    payload: str
    content: str
    headers: tuple[str, ...]
    heartbeat_period: int | None
    timeout: int
    max_count: int
    end: str | None
    resource: JsonObject = field(compare=False, repr=False)

    @property
    def resource_type(self) -> str:
        """The resource type the filters apply to."""
        return self.criteria[0].resource_type if self.criteria else ""

    def matches(self, resource: JsonObject) -> bool:
        """Whether a resource passes every filter (filters are ANDed)."""
        return all(c.matches(resource) for c in self.criteria)

    def header_pairs(self) -> list[tuple[str, str]]:
        """channel.header as (name, value) pairs, split on the first colon; the value without
        the optional whitespace around it (RFC 9110 section 5.5), otherwise verbatim."""
        pairs = []
        for header in self.headers:
            name, _, value = header.partition(":")
            pairs.append((name.strip(), value.strip(" \t")))
        return pairs


def _extensions(element: object, where: str) -> list[JsonObject]:
    if element is None:
        return []
    if not isinstance(element, dict):
        raise InvalidSubscription(f"{where} must be an object", expression=where)
    extensions = element.get("extension", [])
    if not isinstance(extensions, list) or not all(isinstance(e, dict) for e in extensions):
        raise InvalidSubscription(f"{where}.extension must be a list of objects", expression=where)
    return extensions


def _unsigned(extension: JsonObject, key: str, bounds: tuple[int, int], name: str) -> int:
    value = extension.get(key)
    low, high = bounds
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidSubscription(
            f"{name} must be {key} between {low} and {high}, got {value!r}",
            expression=f"Subscription.channel.extension('{name}')",
        )
    return value


def subscription_topic(resource: JsonObject, topics: TopicCatalog) -> Topic:
    """The topic a Subscription names in `criteria` (InvalidSubscription if unsupported)."""
    criteria = resource.get("criteria")
    if not isinstance(criteria, str) or not criteria:
        raise InvalidSubscription(
            "criteria must hold the canonical URL of a SubscriptionTopic",
            expression="Subscription.criteria",
        )
    if criteria not in topics:
        known = ", ".join(sorted(topics))
        raise InvalidSubscription(
            f"unsupported topic {criteria!r}; this server supports: {known}",
            expression="Subscription.criteria",
        )
    return topics[criteria]


def filter_texts(resource: JsonObject) -> tuple[str, ...]:
    """The backport filter-criteria strings of a Subscription, checked for form and size."""
    extensions = _extensions(resource.get("_criteria"), "Subscription._criteria")
    _check_filter_count(len(extensions))
    texts = []
    for extension in extensions:
        url = extension.get("url")
        if url != FILTER_CRITERIA_URL:
            raise InvalidSubscription(
                f"unsupported extension {url!r} on Subscription.criteria; only "
                f"{FILTER_CRITERIA_URL} is allowed",
                expression="Subscription._criteria",
            )
        texts.append(checked_filter_text(extension.get("valueString")))
    return tuple(texts)


def checked_filter_texts(texts: list[object]) -> tuple[str, ...]:
    """Filter-criteria strings read back from storage, checked as `filter_texts` checks them."""
    _check_filter_count(len(texts))
    return tuple(checked_filter_text(text) for text in texts)


def _check_filter_count(count: int) -> None:
    if count > MAX_FILTERS:
        raise InvalidSubscription(
            f"a subscription may have at most {MAX_FILTERS} filters",
            expression="Subscription._criteria",
        )


def checked_filter_text(text: object) -> str:
    """A filter-criteria string checked for form and size (InvalidSubscription if not)."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidSubscription(
            "backport-filter-criteria needs a non-empty valueString",
            expression="Subscription._criteria",
        )
    if len(text) > MAX_FILTER_LENGTH or (
        text.count(",") >= MAX_FILTER_VALUES
        and any(part.count(",") >= MAX_FILTER_VALUES for part in text.split("&"))
    ):
        raise InvalidSubscription(
            f"a filter may be at most {MAX_FILTER_LENGTH} characters long, with at most "
            f"{MAX_FILTER_VALUES} values per parameter",
            expression="Subscription._criteria",
        )
    return text


def compile_filters(topic: Topic, texts: tuple[str, ...]) -> tuple[Criteria, ...]:
    """Filter-criteria strings parsed as criteria on the topic's resource types."""
    resource_types = sorted(topic.resource_types)
    criteria = []
    for text in texts:
        resource_type = _filter_resource_type(text, resource_types)
        try:
            criteria.append(
                parse_filter(resource_type, text, allowed=topic.filter_parameters(resource_type))
            )
        except SearchParameterError as exc:
            raise InvalidSubscription(
                f"filter {text!r} is not supported: {exc.diagnostics}",
                expression="Subscription._criteria",
            ) from exc
    return tuple(criteria)


def _filter_resource_type(text: str, resource_types: list[str]) -> str:
    head = text.split("?", 1)[0] if "?" in text else text.split("=", 1)[0].split(".", 1)[0]
    if head in resource_types:
        return head
    if len(resource_types) == 1:
        return resource_types[0]
    raise InvalidSubscription(
        f"filter {text!r} must name its resource type (one of {', '.join(resource_types)})",
        expression="Subscription._criteria",
    )


def _payload(channel: JsonObject) -> tuple[str, str]:
    payload = channel.get("payload")
    if not isinstance(payload, str) or not payload:
        raise InvalidSubscription(
            f"channel.payload must name the MIME type of notifications ({FHIR_JSON} or {FHIR_XML})",
            expression="Subscription.channel.payload",
        )
    mime, *params = [p.strip() for p in payload.split(";")]
    if mime not in SUPPORTED_PAYLOADS:
        raise InvalidSubscription(
            f"unsupported channel.payload {mime!r}; supported: {', '.join(SUPPORTED_PAYLOADS)}",
            expression="Subscription.channel.payload",
        )
    for param in params:
        key, _, value = param.partition("=")
        if key.strip() == "fhirVersion" and value.strip() not in SUPPORTED_FHIR_VERSIONS:
            raise InvalidSubscription(
                f"fhirVersion {value.strip()!r} cannot be produced; this server speaks FHIR 4.0",
                expression="Subscription.channel.payload",
            )
    content = "id-only"
    for extension in _extensions(channel.get("_payload"), "Subscription.channel._payload"):
        if extension.get("url") != PAYLOAD_CONTENT_URL:
            raise InvalidSubscription(
                f"unsupported extension {extension.get('url')!r} on channel.payload",
                expression="Subscription.channel._payload",
            )
        content = extension.get("valueCode")  # type: ignore[assignment]
        if content not in CONTENT_CODES:
            raise InvalidSubscription(
                f"payload content must be one of {', '.join(CONTENT_CODES)}, got {content!r}",
                expression="Subscription.channel._payload",
            )
    return payload, content


# RFC 9110 section 5.6.2: a field name is a token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 section 5.5: visible ASCII, space and tab (no CR, LF, NUL or other controls).
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e]*")
# Headers that frame the message or describe the connection are Herald's to send: a client
# value would split the request (Transfer-Encoding beside Content-Length), send it elsewhere
# (Host) or contradict the payload (Content-Type).
RESERVED_HEADERS = frozenset(
    {
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "expect",
        "host",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
    }
)
MAX_HEADERS = 20
MAX_HEADER_BYTES = 4096
"""Per header line (name, colon and value)."""
MAX_HEADERS_TOTAL_BYTES = 16 * 1024


def _headers(channel: JsonObject) -> tuple[str, ...]:
    where = "Subscription.channel.header"
    headers = channel.get("header", [])
    if not isinstance(headers, list):
        raise InvalidSubscription("channel.header must be a list of strings", expression=where)
    if len(headers) > MAX_HEADERS:
        raise InvalidSubscription(
            f"channel.header may hold at most {MAX_HEADERS} headers", expression=where
        )
    total = 0
    for position, header in enumerate(headers):
        at = f"{where}[{position}]"
        if not isinstance(header, str) or ":" not in header:
            raise InvalidSubscription(
                "channel.header entries must look like 'Name: value'", expression=at
            )
        name, _, value = header.partition(":")
        if not _TOKEN.fullmatch(name):
            raise InvalidSubscription(
                f"channel.header entries must look like 'Name: value' with an HTTP field name "
                f"(RFC 9110 token); {name[:80]!r} is not one",
                expression=at,
            )
        if name.lower() in RESERVED_HEADERS:
            raise InvalidSubscription(
                f"channel.header may not set {name}: Herald sets the framing and connection "
                "headers itself",
                expression=at,
            )
        if not _FIELD_VALUE.fullmatch(value):
            # The value is not echoed: it may be a credential.
            raise InvalidSubscription(
                f"the value of channel.header {name} must be visible ASCII (no control "
                "characters, CR, LF or NUL)",
                expression=at,
            )
        size = len(header)
        if size > MAX_HEADER_BYTES:
            raise InvalidSubscription(
                f"channel.header {name} is longer than {MAX_HEADER_BYTES} bytes", expression=at
            )
        total += size
    if total > MAX_HEADERS_TOTAL_BYTES:
        raise InvalidSubscription(
            f"channel.header holds more than {MAX_HEADERS_TOTAL_BYTES} bytes", expression=where
        )
    return tuple(headers)


def subscription_object(resource: object) -> JsonObject:
    """The resource, if it is a JSON object of resourceType Subscription."""
    if not isinstance(resource, dict):
        raise InvalidSubscription("the body must be a JSON object")
    if resource.get("resourceType") != "Subscription":
        raise InvalidSubscription(
            f"expected resourceType Subscription, got {resource.get('resourceType')!r}"
        )
    return resource


def parse_subscription(
    resource: object,
    topics: TopicCatalog,
    policy: EndpointPolicy,
    *,
    status: str | None = None,
) -> Subscription:
    """Validate a Subscription resource and return Herald's view of it.

    `status` overrides the resource's status (the server decides it on create).
    """
    resource = subscription_object(resource)
    resource_id = resource.get("id")
    if resource_id is not None and not is_valid_id(resource_id):
        raise InvalidSubscription(f"invalid id {resource_id!r}", expression="Subscription.id")
    given_status = resource.get("status", SubscriptionStatus.REQUESTED)
    if not isinstance(given_status, str) or given_status not in STATUSES:
        raise InvalidSubscription(
            f"status must be one of {', '.join(sorted(STATUSES))}, got {given_status!r}",
            expression="Subscription.status",
        )
    topic = subscription_topic(resource, topics)
    filters = filter_texts(resource)
    criteria = compile_filters(topic, filters)
    channel = resource.get("channel")
    if not isinstance(channel, dict):
        raise InvalidSubscription("channel is required", expression="Subscription.channel")
    if channel.get("type") != "rest-hook":
        raise InvalidSubscription(
            f"unsupported channel.type {channel.get('type')!r}; this server supports rest-hook",
            expression="Subscription.channel.type",
        )
    if _extensions(channel.get("_type"), "Subscription.channel._type"):
        raise InvalidSubscription(
            "custom channel types (backport-channel-type) are not supported",
            expression="Subscription.channel._type",
        )
    endpoint = channel.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise InvalidSubscription(
            "channel.endpoint is required for rest-hook", expression="Subscription.channel.endpoint"
        )
    policy.check(endpoint)
    payload, content = _payload(channel)
    heartbeat, timeout, max_count = None, DEFAULT_TIMEOUT, DEFAULT_MAX_COUNT
    for extension in _extensions(channel, "Subscription.channel"):
        url = extension.get("url")
        if url == HEARTBEAT_PERIOD_URL:
            heartbeat = _unsigned(
                extension, "valueUnsignedInt", HEARTBEAT_RANGE, "heartbeat-period"
            )
        elif url == TIMEOUT_URL:
            timeout = _unsigned(extension, "valueUnsignedInt", TIMEOUT_RANGE, "timeout")
        elif url == MAX_COUNT_URL:
            max_count = _unsigned(extension, "valuePositiveInt", MAX_COUNT_RANGE, "max-count")
        else:
            raise InvalidSubscription(
                f"unsupported extension {url!r} on Subscription.channel",
                expression="Subscription.channel.extension",
            )
    end = resource.get("end")
    if end is not None and not isinstance(end, str):
        raise InvalidSubscription("end must be an instant", expression="Subscription.end")
    return Subscription(
        id=resource_id or "",
        status=status or given_status,
        topic_url=topic.url,
        filters=filters,
        criteria=criteria,
        endpoint=endpoint,
        payload=payload,
        content=content,
        headers=_headers(channel),
        heartbeat_period=heartbeat,
        timeout=timeout,
        max_count=max_count,
        end=end,
        resource=resource,
    )


def endpoint_origin(resource: JsonObject) -> str | None:
    """scheme://host:port of a stored Subscription's endpoint (the unit of per-origin quotas)."""
    channel = resource.get("channel")
    endpoint = channel.get("endpoint") if isinstance(channel, dict) else None
    if not isinstance(endpoint, str):
        return None
    try:
        parts = urlsplit(endpoint)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return f"{parts.scheme}://{(parts.hostname or '').lower().rstrip('.')}:{port}"[:300]


def heartbeat_period(channel_extensions: object) -> int | None:
    """The backport-heartbeat-period of a stored channel's extensions, if any."""
    for extension in channel_extensions if isinstance(channel_extensions, list) else []:
        if isinstance(extension, dict) and extension.get("url") == HEARTBEAT_PERIOD_URL:
            value = extension.get("valueUnsignedInt")
            return value if isinstance(value, int) and value > 0 else None
    return None


def _instant(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def effective_end(resource: JsonObject) -> datetime | None:
    """When a stored Subscription's `end` turns it off; None if it never does.

    An `end` already in the past when the client wrote the subscription is ignored: sample
    Subscriptions of conformance suites carry stale dates, and turning those off at once would
    only look like a broken server. An unreadable `end` never expires.
    """
    end = _instant(resource.get("end"))
    written = _instant((resource.get("meta") or {}).get("lastUpdated"))
    if end is None or (written is not None and end <= written):
        return None
    return end


def expired(resource: JsonObject, now: datetime) -> bool:
    """Whether a stored Subscription's `end` has passed since it was last written."""
    end = effective_end(resource)
    return end is not None and end <= now


def check_client_status(status: object) -> None:
    """Clients may only ask for requested or off; the server sets active and error."""
    if not isinstance(status, str) or status not in CLIENT_STATUSES:
        raise FhirError(
            f"a client may set Subscription.status to requested or off, not {status!r}; "
            "active and error are set by the server",
            expression="Subscription.status",
        )

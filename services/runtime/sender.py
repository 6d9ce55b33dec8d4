"""The HTTP sender: one POST of a notification, its outcome in Herald's words."""

from __future__ import annotations

import email.utils
import functools
import re
import ssl
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from yarl import URL

from herald import __version__
from herald.core.fhir import whole_number
from herald.core.states import DeliveryOutcome, DeliveryResult
from herald.core.subscriptions import RESERVED_HEADERS, EndpointPolicy
from herald.runtime.http1 import AnswerError, Http1Client, Origin, origin_of
from herald.runtime.vetting import literal_refusal, refused_reason

USER_AGENT = f"Herald/{__version__}"


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds a Retry-After header asks to wait (delta-seconds or HTTP-date); None if unusable."""
    if not value:
        return None
    seconds = whole_number(value.strip())
    if seconds is not None:
        return float(seconds)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


# Exception texts in outcomes (stored as a subscription's error, logged) are cut to this length.
DETAIL_LIMIT = 300


def describe(exc: BaseException) -> str:
    """An exception as a short, single-line text (never the URL: its query may hold a token)."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= DETAIL_LIMIT else text[: DETAIL_LIMIT - 1] + "…"


# Up to this many bytes of a response body are read (and thrown away, never parsed) so that the
# connection goes back to the pool; a larger body closes the connection instead.
DRAIN_LIMIT = 64 * 1024

# What HTTP/1.1 lets a header carry (RFC 9110 token names; visible ASCII, spaces and tabs inside a
# value); channel.header is checked at create, and again here before anything is written.
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\t\x20-\x7e]*[\x21-\x7e])?)?")


def _header_block(content_type: str, length: int, headers: Sequence[tuple[str, str]]) -> bytes:
    """The request's per-POST headers and the blank line; ValueError (or UnicodeEncodeError)
    when one cannot be sent as is or would set what Herald frames the request with."""
    parts = ["Content-Type: ", content_type, "\r\nContent-Length: ", str(length), "\r\n"]
    if not _VALUE.fullmatch(content_type):
        raise ValueError("the content type is not a valid HTTP/1.1 field value")
    for name, value in headers:
        if (
            not _NAME.fullmatch(name)
            or not _VALUE.fullmatch(value)
            or name.lower() in RESERVED_HEADERS
        ):
            name.encode("ascii")
            value.encode("ascii")
            raise ValueError(f"header {name[:40]!r} is not a valid HTTP/1.1 field here")
        parts += (name, ": ", value, "\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("ascii")


@functools.cache
def _accepted(code: int) -> DeliveryOutcome:
    """The outcome of a 2xx answer, built once per code (outcomes are frozen)."""
    return DeliveryOutcome(DeliveryResult.SUCCESS, code, f"HTTP {code}")


def _refused(reason: str) -> DeliveryOutcome:
    return DeliveryOutcome(DeliveryResult.REFUSED, None, f"endpoint not allowed: {reason}")


def _unsendable(exc: BaseException) -> DeliveryOutcome:
    return DeliveryOutcome(
        DeliveryResult.UNSENDABLE, None, f"the request could not be sent: {describe(exc)}"
    )


# Parsed endpoint URLs kept per sender (each with the policy's answer for a literal address);
# the cache is emptied when it reaches this size, so a registry of many endpoints costs at
# most this many entries.
TARGET_CACHE = 4096


class HttpSender:
    """POSTs notification Bundles; never follows redirects and never parses the response body.

    Connections go only to addresses the endpoint policy allows, checked when each connection
    is made (see vetting.py); they are pooled per origin and kept alive 5 s. A small body is
    read and dropped so that the pooled connection can be reused. No cookies are kept (one
    endpoint's Set-Cookie never reaches another subscription's POST) and no proxy or other
    environment setting applies. `timeout` bounds the whole attempt: the wait for a pooled
    connection, connecting, sending, and the answer with its drained body.

    Built on a small HTTP/1.1 client of its own (http1.py): the request is written in one
    piece and the answer parsed by httptools, for a fraction of a general client's CPU per
    POST (bench/dispatch.py --clients).
    """

    def __init__(
        self,
        policy: EndpointPolicy,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy
        self._ssl_context = ssl_context  # the CAs endpoints' certificates must chain to
        self._client: Http1Client | None = None
        # Parsing the URL and vetting a literal address cost about a tenth of a POST; both
        # depend only on the URL and the (frozen) policy, so each endpoint pays them once.
        self._targets: dict[str, tuple[Origin | None, str | None]] = {}

    def _http(self) -> Http1Client:
        """The client, made on first use (its pool belongs to the running loop)."""
        if self._client is None:
            self._client = Http1Client(
                self.policy, ssl_context=self._ssl_context, drain_limit=DRAIN_LIMIT
            )
        return self._client

    async def aclose(self) -> None:
        """Close pooled connections."""
        if self._client is not None:
            await self._client.aclose()

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        content_type: str,
        headers: Sequence[tuple[str, str]],
        timeout: float,
    ) -> tuple[DeliveryOutcome, float]:
        """POST once; return the outcome and the seconds it took."""
        started = time.perf_counter()
        try:
            outcome = await self._post(url, body, content_type, headers, timeout)
        except TimeoutError:
            outcome = DeliveryOutcome(
                DeliveryResult.TIMEOUT, None, f"no response within {timeout:g} s"
            )
        except (AnswerError, OSError) as exc:
            refused = refused_reason(exc)
            if refused is not None:
                outcome = _refused(refused)
            else:
                outcome = DeliveryOutcome(
                    DeliveryResult.CONNECTION_ERROR, None, f"could not connect: {describe(exc)}"
                )
        except Exception as exc:  # noqa: BLE001 -- whatever the request held, it is one failed POST
            outcome = _unsendable(exc)
        return outcome, time.perf_counter() - started

    def _target(self, url: str) -> tuple[Origin | None, str | None]:
        """Where the URL's POSTs go (None when it is no usable http(s) URL), and why the policy
        refuses its host when that is an address."""
        known = self._targets.get(url)
        if known is None:
            if len(self._targets) >= TARGET_CACHE:
                self._targets.clear()
            known = self._targets[url] = _parsed(self.policy, url)
        return known

    async def _post(
        self,
        url: str,
        body: bytes,
        content_type: str,
        headers: Sequence[tuple[str, str]],
        timeout: float,
    ) -> DeliveryOutcome:
        """The POST itself; what goes wrong is raised (TimeoutError past `timeout`)."""
        origin, refused = self._target(url)
        if refused is not None:
            return _refused(refused)
        if origin is None:
            raise ValueError("not a usable http(s) URL")
        code, retry_after = await self._http().post(
            origin, _header_block(content_type, len(body), headers), body, timeout
        )
        if 200 <= code < 300:
            return _accepted(code)
        if code == 410:
            return DeliveryOutcome(DeliveryResult.GONE, code, "the endpoint answered 410 Gone")
        return DeliveryOutcome(
            DeliveryResult.HTTP_ERROR,
            code,
            f"the endpoint answered HTTP {code}",
            retry_after_seconds(retry_after),
        )


def _parsed(policy: EndpointPolicy, url: str) -> tuple[Origin | None, str | None]:
    """The URL's origin and request prefix, and the policy's refusal of a literal address."""
    try:
        target = URL(url)
        host = target.raw_host
        port = target.port
        if target.scheme not in ("http", "https") or not host or port is None:
            return None, None
        return (
            origin_of(target.scheme, host, port, target.raw_path_qs, USER_AGENT),
            literal_refusal(policy, host),
        )
    except (ValueError, UnicodeError):
        return None, None

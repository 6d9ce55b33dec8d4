"""The HTTP sender: one POST of a notification, its outcome in Herald's words."""

from __future__ import annotations

import email.utils
import re
import ssl
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import aiohttp
from yarl import URL

from herald import __version__
from herald.core.fhir import whole_number
from herald.core.states import DeliveryOutcome, DeliveryResult
from herald.core.subscriptions import EndpointPolicy
from herald.runtime.vetting import literal_refusal, refused_reason, vetting_connector

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
    """An exception as a short, single-line text."""
    text = " ".join(f"{type(exc).__name__}: {_without_url(exc)}".split())
    return text if len(text) <= DETAIL_LIMIT else text[: DETAIL_LIMIT - 1] + "…"


def _without_url(exc: BaseException) -> object:
    """What an exception says, less the URL some of aiohttp's errors quote (its query may hold
    a token, and details are stored and logged)."""
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{exc.status}, {exc.message}"
    if isinstance(exc, aiohttp.InvalidURL):
        return exc.description or "not a usable URL"
    if isinstance(exc, aiohttp.NonHttpUrlClientError):
        return "not an http(s) URL"
    return exc


# Up to this many bytes of a response body are read (and thrown away, never parsed) so that the
# connection goes back to the pool; a larger body closes the connection instead.
DRAIN_LIMIT = 64 * 1024

# What HTTP/1.1 lets a header carry (RFC 9110 token names; visible ASCII, spaces and tabs inside a
# value). aiohttp would write UTF-8, so the check is Herald's; channel.header is checked at create.
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\t\x20-\x7e]*[\x21-\x7e])?)?")


def _checked(headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers as given; ValueError (or UnicodeEncodeError) when one cannot be sent as is."""
    for name, value in headers:
        name.encode("ascii")
        value.encode("ascii")
        if not _NAME.fullmatch(name) or not _VALUE.fullmatch(value):
            raise ValueError(f"header {name[:40]!r} is not a valid HTTP/1.1 field")
    return list(headers)


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read and drop a small body so the connection is reused; close it after a larger one."""
    read = 0
    while chunk := await response.content.readany():
        read += len(chunk)
        if read > DRAIN_LIMIT:
            response.close()
            return


def _refused(reason: str) -> DeliveryOutcome:
    return DeliveryOutcome(DeliveryResult.REFUSED, None, f"endpoint not allowed: {reason}")


def _unsendable(exc: BaseException) -> DeliveryOutcome:
    return DeliveryOutcome(
        DeliveryResult.UNSENDABLE, None, f"the request could not be sent: {describe(exc)}"
    )


MAX_HEADER_LINE = 64 * 1024
"""Longest response header line read (bytes)."""

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

    Built on aiohttp directly: at 32 POSTs in flight it costs under a tenth of httpx's CPU per
    POST, and about a third of httpx's on an aiohttp transport (bench/dispatch.py --clients).
    """

    def __init__(
        self,
        policy: EndpointPolicy,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy
        self._ssl_context = ssl_context  # the CAs endpoints' certificates must chain to
        self._session: aiohttp.ClientSession | None = None
        # Parsing the URL and vetting a literal address cost about a tenth of a POST; both
        # depend only on the URL and the (frozen) policy, so each endpoint pays them once.
        self._targets: dict[str, tuple[URL, str | None]] = {}

    def _client(self) -> aiohttp.ClientSession:
        """The session, made on first use (aiohttp binds it to the running loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=vetting_connector(self.policy, ssl_context=self._ssl_context),
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": USER_AGENT},
                auto_decompress=False,
                trust_env=False,
                # aiohttp refuses header lines over 8 KiB; an endpoint's long cookie or Link
                # header must not turn its 200 into a failed attempt.
                max_line_size=MAX_HEADER_LINE,
                max_field_size=MAX_HEADER_LINE,
            )
        return self._session

    async def aclose(self) -> None:
        """Close pooled connections."""
        if self._session is not None:
            await self._session.close()

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
        except aiohttp.InvalidURL as exc:
            outcome = _unsendable(exc)
        except (aiohttp.ClientError, OSError) as exc:
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

    def _target(self, url: str) -> tuple[URL, str | None]:
        """The URL parsed, and why the policy refuses its host when that is an address."""
        known = self._targets.get(url)
        if known is None:
            if len(self._targets) >= TARGET_CACHE:
                self._targets.clear()
            target = URL(url)
            known = self._targets[url] = (
                target,
                literal_refusal(self.policy, target.raw_host or ""),
            )
        return known

    async def _post(
        self,
        url: str,
        body: bytes,
        content_type: str,
        headers: Sequence[tuple[str, str]],
        timeout: float,
    ) -> DeliveryOutcome:
        """The POST itself; what goes wrong is raised."""
        target, refused = self._target(url)
        if refused is not None:
            return _refused(refused)
        async with self._client().post(
            target,
            data=body,
            headers=[("Content-Type", content_type), *_checked(headers)],
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            await _drain(response)
            code = response.status
            retry_after = response.headers.get("Retry-After")
        if 200 <= code < 300:
            return DeliveryOutcome(DeliveryResult.SUCCESS, code, f"HTTP {code}")
        if code == 410:
            return DeliveryOutcome(DeliveryResult.GONE, code, "the endpoint answered 410 Gone")
        return DeliveryOutcome(
            DeliveryResult.HTTP_ERROR,
            code,
            f"the endpoint answered HTTP {code}",
            retry_after_seconds(retry_after),
        )

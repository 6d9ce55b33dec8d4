"""The HTTP sender: one POST of a notification, its outcome in Herald's words."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import httpx

from herald import __version__
from herald.core.fhir import whole_number
from herald.core.states import DeliveryOutcome, DeliveryResult
from herald.core.subscriptions import EndpointPolicy
from herald.runtime.vetting import VettingTransport, refused_reason

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


# Up to this many bytes of a response body are read (and thrown away, never parsed) so that the
# connection goes back to the pool; a larger body closes the connection instead.
DRAIN_LIMIT = 64 * 1024


async def _discard_body(response: httpx.Response) -> None:
    """Read and drop a small body: httpx reuses a connection only once its response is read."""
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read > DRAIN_LIMIT:
            return


# Exception texts in outcomes (stored as a subscription's error, logged) are cut to this length.
DETAIL_LIMIT = 300


def describe(exc: BaseException) -> str:
    """An exception as a short, single-line text."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= DETAIL_LIMIT else text[: DETAIL_LIMIT - 1] + "…"


class HttpSender:
    """POSTs notification Bundles; never follows redirects and never parses the response body.

    Connections go only to addresses the endpoint policy allows, checked when each connection
    is made (see vetting.py). A small body is read and dropped so that the pooled connection
    can be reused (without it, every POST would open a new TCP (and TLS) connection).
    """

    def __init__(self, policy: EndpointPolicy, client: httpx.AsyncClient | None = None) -> None:
        self._client = client or httpx.AsyncClient(
            follow_redirects=False,
            transport=VettingTransport(
                policy, httpx.Limits(max_connections=200, max_keepalive_connections=50)
            ),
            headers={"User-Agent": USER_AGENT},
        )

    async def aclose(self) -> None:
        """Close pooled connections."""
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
        request_headers = [("Content-Type", content_type), *headers]
        started = time.perf_counter()
        try:
            request = self._client.build_request(
                "POST", url, content=body, headers=request_headers, timeout=timeout
            )
            response = await self._client.send(request, stream=True)
            try:
                await _discard_body(response)
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            outcome = DeliveryOutcome(
                DeliveryResult.TIMEOUT, None, f"no response within {timeout:g} s"
            )
        except httpx.HTTPError as exc:
            refused = refused_reason(exc)
            if refused is not None:
                outcome = DeliveryOutcome(
                    DeliveryResult.REFUSED, None, f"endpoint not allowed: {refused}"
                )
            elif isinstance(exc, httpx.LocalProtocolError):
                outcome = DeliveryOutcome(
                    DeliveryResult.UNSENDABLE,
                    None,
                    f"the request could not be sent: {describe(exc)}",
                )
            else:
                outcome = DeliveryOutcome(
                    DeliveryResult.CONNECTION_ERROR, None, f"could not connect: {describe(exc)}"
                )
        except Exception as exc:  # noqa: BLE001 -- whatever the request held, it is one failed POST
            outcome = DeliveryOutcome(
                DeliveryResult.UNSENDABLE, None, f"the request could not be sent: {describe(exc)}"
            )
        else:
            code = response.status_code
            if 200 <= code < 300:
                outcome = DeliveryOutcome(DeliveryResult.SUCCESS, code, f"HTTP {code}")
            elif code == 410:
                outcome = DeliveryOutcome(
                    DeliveryResult.GONE, code, "the endpoint answered 410 Gone"
                )
            else:
                outcome = DeliveryOutcome(
                    DeliveryResult.HTTP_ERROR,
                    code,
                    f"the endpoint answered HTTP {code}",
                    retry_after_seconds(response.headers.get("Retry-After")),
                )
        return outcome, time.perf_counter() - started

"""`herald receive`'s SMART client: where it sends a client's assertion."""

from __future__ import annotations

import httpx
import pytest

from herald.core.errors import AuthorizationFailed
from herald.receiver.smart import token_endpoint


def _discovery(token_url: str) -> httpx.Client:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"token_endpoint": token_url})

    return httpx.Client(transport=httpx.MockTransport(answer))


@pytest.mark.parametrize(
    ("base", "token_url", "usable"),
    [
        ("https://fhir.example/fhir", "https://fhir.example/fhir/auth/token", True),
        ("https://fhir.example/fhir", "http://fhir.example/fhir/auth/token", False),
        ("http://127.0.0.1:8080/fhir", "http://127.0.0.1:8080/fhir/auth/token", True),
        ("https://fhir.example/fhir", "ftp://fhir.example/token", False),
    ],
)
def test_a_token_endpoint_is_used_only_over_tls_when_the_base_is(
    base: str, token_url: str, usable: bool
) -> None:
    with _discovery(token_url) as client:
        if usable:
            assert token_endpoint(base, client) == token_url
        else:
            with pytest.raises(AuthorizationFailed, match="no usable token endpoint"):
                token_endpoint(base, client)

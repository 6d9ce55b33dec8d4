"""Herald's exception tree.

Every error Herald raises on purpose is defined here, so the whole tree reads in one place:

HeraldError
├── FhirError                   an error a FHIR client caused; carries HTTP status and issue code
│   ├── InvalidResource         400 / invalid
│   │   └── InvalidSubscription 400 / invalid (a Subscription Herald will not accept)
│   ├── SearchParameterError    400 / not-supported (unknown or malformed search parameter)
│   ├── Unauthorized            401 / security (a Canvas snapshot's signature is missing or wrong)
│   ├── Unauthenticated         401 / login (no valid access token; WWW-Authenticate: Bearer)
│   ├── Forbidden               403 / forbidden (scope, tenancy, a Task only its source changes)
│   ├── QuotaExceeded           403 / too-costly (one more would pass a quota)
│   ├── ResourceNotFound        404 / not-found
│   ├── NotSupported            405 / not-supported (an interaction Herald does not offer)
│   ├── NotAcceptable           406 / not-supported
│   ├── ResourceGone            410 / deleted
│   ├── VersionConflict         412 / conflict (If-Match names a version that is not current)
│   ├── MultipleMatches         412 / multiple-matches (a conditional interaction's criteria)
│   ├── PayloadTooLarge         413 / too-costly
│   └── UnsupportedMediaType    415 / not-supported
├── ConcurrentWrite             the store refused a write another transaction raced (retriable)
├── ContractError               a bus record does not follow its contract (never retriable)
├── ClientExists                `herald clients add` of an id already registered
├── SecretsKeyError             a stored channel.header cannot be decrypted with HERALD_SECRETS_KEY
├── OperatorRefused             an operator command cannot act (`herald subscriptions replay`)
├── AuthorizationFailed         `herald receive` found no token endpoint or was refused a token
└── TopicDefinitionError        a topic file is not a usable SubscriptionTopic (a startup error)

An error whose class sets `retriable = True` is a passing condition: retrying the same work
may succeed. `herald.runtime.retriable.is_retriable` reads it (and judges the errors of
SQLAlchemy and aiokafka); `herald.runtime.lifecycle.retry_until_done` retries nothing else.
A test (tests/unit/test_errors.py) keeps this drawing complete.
"""

from __future__ import annotations


class HeraldError(Exception):
    """Root of every error Herald raises on purpose."""

    retriable: bool = False
    """Whether the same work may succeed when tried again."""


class FhirError(HeraldError):
    """An error to answer with an OperationOutcome."""

    status_code: int = 400
    issue_code: str = "invalid"

    def __init__(self, diagnostics: str, *, expression: str | None = None) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.expression = expression


class InvalidResource(FhirError):
    """The request body is not an acceptable resource."""


class InvalidSubscription(InvalidResource):
    """A Subscription that Herald will not accept."""


class SearchParameterError(FhirError):
    """A search or filter parameter is unknown, unsupported or malformed."""

    issue_code = "not-supported"


class ResourceNotFound(FhirError):
    """No resource with that id."""

    status_code = 404
    issue_code = "not-found"


class ResourceGone(FhirError):
    """The resource existed and was deleted."""

    status_code = 410
    issue_code = "deleted"


class UnsupportedMediaType(FhirError):
    """The request body's format is not one Herald reads."""

    status_code = 415
    issue_code = "not-supported"


class NotAcceptable(FhirError):
    """The client asked for a format Herald cannot produce."""

    status_code = 406
    issue_code = "not-supported"


class Unauthorized(FhirError):
    """The request's credentials (a Canvas snapshot's signature) are missing or wrong."""

    status_code = 401
    issue_code = "security"


class Unauthenticated(FhirError):
    """No valid access token (RFC 6750: answered with WWW-Authenticate: Bearer)."""

    status_code = 401
    issue_code = "login"

    def __init__(self, diagnostics: str, *, error: str | None = "invalid_token") -> None:
        super().__init__(diagnostics)
        self.error = error
        """The RFC 6750 error code, or None when the request carried no token at all."""


class Forbidden(FhirError):
    """The client is known but may not do this."""

    status_code = 403
    issue_code = "forbidden"


class VersionConflict(FhirError):
    """If-Match named a version that is not the current one."""

    status_code = 412
    issue_code = "conflict"


class QuotaExceeded(FhirError):
    """One more subscription would pass a quota (per endpoint origin)."""

    status_code = 403
    issue_code = "too-costly"


class NotSupported(FhirError):
    """An interaction Herald does not offer on a resource type it serves."""

    status_code = 405
    issue_code = "not-supported"


class MultipleMatches(FhirError):
    """A conditional interaction's criteria match more than one resource."""

    status_code = 412
    issue_code = "multiple-matches"


class PayloadTooLarge(FhirError):
    """The request body is over the size limit."""

    status_code = 413
    issue_code = "too-costly"


class ConcurrentWrite(HeraldError):
    """Another transaction wrote the same new key first (a unique constraint held).

    The store raises it in place of the driver's integrity error; trying again sees the winner.
    """

    retriable = True


class ContractError(HeraldError):
    """A record does not follow its contract."""


class ClientExists(HeraldError):
    """A client with that id is registered already."""


class SecretsKeyError(HeraldError):
    """A stored channel.header cannot be decrypted with the configured keys."""


class TopicDefinitionError(HeraldError):
    """A topic file is not a usable SubscriptionTopic."""


class OperatorRefused(HeraldError):
    """An operator command cannot act on what it was given (unknown or inactive subscription)."""


class AuthorizationFailed(HeraldError):
    """A SMART client found no token endpoint, no usable key, or was refused a token."""

"""Herald's exception tree.

HeraldError
└── FhirError                 an error a FHIR client caused; carries HTTP status and issue code
    ├── InvalidResource       400 / invalid
    ├── SearchParameterError  400 / not-supported (unknown or malformed search parameter)
    ├── ResourceNotFound      404 / not-found
    ├── ResourceGone          410 / deleted
    ├── UnsupportedMediaType  415 / not-supported
    ├── NotAcceptable         406 / not-supported
    ├── Unauthenticated       401 / login (no valid access token)
    └── Forbidden             403 / forbidden (scope, tenancy, ownership of the source)
"""

from __future__ import annotations


class HeraldError(Exception):
    """Root of every error Herald raises on purpose."""


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

"""Herald's exception tree.

HeraldError
└── FhirError                 an error a FHIR client caused; carries HTTP status and issue code
    ├── InvalidResource       400 / invalid
    ├── SearchParameterError  400 / not-supported (unknown or malformed search parameter)
    ├── ResourceNotFound      404 / not-found
    ├── ResourceGone          410 / deleted
    ├── UnsupportedMediaType  415 / not-supported
    └── NotAcceptable         406 / not-supported
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

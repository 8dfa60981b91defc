"""Domain errors. Services raise these; the API maps them to problem+json in one place.

AgoraError
 ├── InvalidInput          422  input is well-formed but breaks a rule
 ├── Unauthenticated       401  no or bad credentials
 │    └── TOTPRequired     401  password accepted, a TOTP code is needed
 ├── Forbidden             403  authenticated but not allowed
 │    ├── ActionRequired   403  the account must do something first (change password, enrol TOTP)
 │    └── QuotaExceeded    403  the project's quota would be exceeded
 ├── NotFound              404  unknown, or belongs to a project the caller cannot see
 ├── Conflict              409  would break a uniqueness or state rule
 ├── TooManyAttempts       429  throttled; carries retry_after seconds
 ├── BadGateway            502  a deployment's service did not answer
 ├── ServiceUnavailable    503  a deployment is not serving (yet)
 └── GatewayTimeout        504  a deployment's service answered too slowly
"""

from __future__ import annotations


class AgoraError(Exception):
    status = 400
    code = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(AgoraError):
    status = 422
    code = "invalid-input"
    title = "Invalid input"


class Unauthenticated(AgoraError):
    status = 401
    code = "unauthenticated"
    title = "Authentication required"


class TOTPRequired(Unauthenticated):
    code = "totp-required"
    title = "TOTP code required"


class Forbidden(AgoraError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class ActionRequired(Forbidden):
    code = "action-required"
    title = "Action required on your account"


class QuotaExceeded(Forbidden):
    code = "quota-exceeded"
    title = "Quota exceeded"


class NotFound(AgoraError):
    status = 404
    code = "not-found"
    title = "Not found"


class Conflict(AgoraError):
    status = 409
    code = "conflict"
    title = "Conflict"


class TooManyAttempts(AgoraError):
    status = 429
    code = "too-many-attempts"
    title = "Too many attempts"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.retry_after = retry_after


class ServiceUnavailable(AgoraError):
    status = 503
    code = "service-unavailable"
    title = "Service unavailable"


class BadGateway(AgoraError):
    status = 502
    code = "bad-gateway"
    title = "The service did not answer"


class GatewayTimeout(AgoraError):
    status = 504
    code = "gateway-timeout"
    title = "The service answered too slowly"

"""Errors that service logic raises to answer a request with a specific gRPC status.

Domain modules raise these (they carry a status *name*, so the domain needs no grpc import);
the server interceptor turns them into the status and message the client sees.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base: the request failed with ``code`` and a message meant for the caller."""

    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServiceError):
    code = "INVALID_ARGUMENT"


class NotFound(ServiceError):
    code = "NOT_FOUND"


class AlreadyExists(ServiceError):
    code = "ALREADY_EXISTS"


class PermissionDenied(ServiceError):
    code = "PERMISSION_DENIED"


class FailedPrecondition(ServiceError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(ServiceError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(ServiceError):
    code = "UNAVAILABLE"


class DataLoss(ServiceError):
    code = "DATA_LOSS"

"""Errors that service logic raises to answer a request with a specific gRPC status.

Domain modules raise these (they carry a status *name*, so the domain needs no grpc import);
the server interceptor turns them into the status and message the client sees.
"""

from __future__ import annotations

import re


class ServiceError(Exception):
    """Base: the request failed with ``code`` and a message meant for the caller.

    A subclass's code is its name in gRPC's spelling (``NotFound`` answers ``NOT_FOUND``).
    """

    code = "INTERNAL"

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls.code = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).upper()

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServiceError): ...


class NotFound(ServiceError): ...


class AlreadyExists(ServiceError): ...


class PermissionDenied(ServiceError): ...


class FailedPrecondition(ServiceError): ...


class ResourceExhausted(ServiceError): ...


class Unavailable(ServiceError): ...


class DataLoss(ServiceError): ...

"""gRPC plumbing shared by every service: server host, client helpers, errors."""

from nasloop.rpc.client import connect, wait_until_serving
from nasloop.rpc.errors import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from nasloop.rpc.server import Registration, ServiceHost, call_active

__all__ = [
    "AlreadyExists",
    "DataLoss",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "Registration",
    "ResourceExhausted",
    "ServiceError",
    "ServiceHost",
    "Unavailable",
    "call_active",
    "connect",
    "wait_until_serving",
]

"""The error tree. Every failure a caller can cause or fix has a class here, with a message that
says what to do. The gRPC boundary maps each class to one status code; nothing here imports grpc.

    RoutebookError
    ├── InvalidArgument       the request is malformed (INVALID_ARGUMENT)
    ├── NotFound              a named thing does not exist (NOT_FOUND)
    ├── AlreadyExists         a thing to create exists already (ALREADY_EXISTS)
    ├── FailedPrecondition    the system is not in a state to do it (FAILED_PRECONDITION)
    ├── Unavailable           a dependency is down; retry later (UNAVAILABLE)
    ├── PermissionDenied      policy forbids what was asked (PERMISSION_DENIED)
    ├── ResourceExhausted     a budget or a capacity is used up (RESOURCE_EXHAUSTED)
    ├── Aborted               a concurrent change won; re-read and retry (ABORTED)
    ├── Unauthenticated       no valid credentials (UNAUTHENTICATED)
    └── ConfigError           a setting or a file is wrong; raised at start, never per request
"""

from __future__ import annotations


class RoutebookError(Exception):
    """Base of every error routebook raises on purpose."""


class InvalidArgument(RoutebookError):
    pass


class NotFound(RoutebookError):
    pass


class AlreadyExists(RoutebookError):
    pass


class FailedPrecondition(RoutebookError):
    pass


class Unavailable(RoutebookError):
    pass


class PermissionDenied(RoutebookError):
    pass


class ResourceExhausted(RoutebookError):
    pass


class Aborted(RoutebookError):
    pass


class Unauthenticated(RoutebookError):
    pass


class ConfigError(RoutebookError):
    pass

"""Exceptions of crdtmds, each carrying a stable API error code.

The codes follow the Check Point Management API, so that a reply built from any of these
exceptions reads like one from that API::

    CrdtmdsError                      code
    ├── ValidationError               err_validation_failed
    │   └── NameInUse                 err_name_in_use
    ├── ObjectNotFound                generic_err_object_not_found
    ├── ObjectInUse                   err_object_in_use
    ├── InvalidParameter              generic_err_invalid_parameter
    │   ├── MissingParameter          generic_err_missing_required_parameters
    │   ├── InvalidParameterName      generic_err_invalid_parameter_name
    │   └── UnknownCommand            generic_err_command_not_found
    ├── AuthenticationFailed          err_login_failed
    ├── PermissionDenied              err_insufficient_permissions
    ├── SessionError                  generic_err_wrong_session_id
    │   └── SessionExpired            generic_err_session_expired
    ├── TooManyRequests               err_too_many_requests
    ├── PublishFailed                 err_publish_failed
    ├── NotImplementedHere            not_implemented
    ├── ProtocolError                 err_protocol          (malformed wire data)
    ├── CoreFailure                   generic_internal_error (a panic in the Automerge core)
    ├── StorageError                  err_storage
    │   ├── StorageCorruption         err_storage_corrupt
    │   └── StorageVersionError       err_storage_version
    └── ClusterError                  err_cluster
"""

from __future__ import annotations

from typing import Any


class CrdtmdsError(Exception):
    """Root of every error crdtmds raises on purpose."""

    code = "generic_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def to_reply(self) -> dict[str, Any]:
        """The `error` member of an API reply."""
        return {"code": self.code, "message": self.message, "details": self.details}


class ValidationError(CrdtmdsError):
    code = "err_validation_failed"


class NameInUse(ValidationError):
    code = "err_name_in_use"


class ObjectNotFound(CrdtmdsError):
    code = "generic_err_object_not_found"


class ObjectInUse(CrdtmdsError):
    """Deleting an object that rules or groups still reference."""

    code = "err_object_in_use"


class InvalidParameter(CrdtmdsError):
    code = "generic_err_invalid_parameter"


class MissingParameter(InvalidParameter):
    code = "generic_err_missing_required_parameters"


class InvalidParameterName(InvalidParameter):
    """A parameter name the command does not take ("Unrecognized parameter [x]")."""

    code = "generic_err_invalid_parameter_name"


class UnknownCommand(InvalidParameter):
    code = "generic_err_command_not_found"


class AuthenticationFailed(CrdtmdsError):
    code = "err_login_failed"


class PermissionDenied(CrdtmdsError):
    code = "err_insufficient_permissions"


class SessionError(CrdtmdsError):
    code = "generic_err_wrong_session_id"


class SessionExpired(SessionError):
    code = "generic_err_session_expired"


class TooManyRequests(CrdtmdsError):
    code = "err_too_many_requests"


class PublishFailed(CrdtmdsError):
    code = "err_publish_failed"


class NotImplementedHere(CrdtmdsError):
    """A Check Point request this server does not do (publishing another session)."""

    code = "not_implemented"


class ProtocolError(CrdtmdsError):
    """Bytes from a peer that do not form a valid automerge-repo message."""

    code = "err_protocol"


class CoreFailure(CrdtmdsError):
    """The Automerge core panicked while running an operation on a document.

    The panic surfaces from the binding as pyo3's `PanicException`, a `BaseException`
    that `except Exception` lets through; it is turned into this error where crdtmds
    calls into the core for a request, so the request fails and the server stays up.
    """

    code = "generic_internal_error"


def is_core_panic(exc: BaseException) -> bool:
    """Whether `exc` is a panic inside the Automerge core (pyo3's `PanicException`, which
    the binding does not export under an importable name)."""
    return type(exc).__name__ == "PanicException"


def is_core_error(exc: BaseException) -> bool:
    """Whether `exc` is what a call into the Automerge binding raises when it fails: a
    plain Exception on bad input, or a panic of the core."""
    return isinstance(exc, Exception) or is_core_panic(exc)


class StorageError(CrdtmdsError):
    code = "err_storage"


class StorageCorruption(StorageError):
    """A stored row that cannot be decoded; names the document and the row."""

    code = "err_storage_corrupt"


class StorageVersionError(StorageError):
    """A data directory written by a newer, incompatible crdtmds."""

    code = "err_storage_version"


class ClusterError(CrdtmdsError):
    code = "err_cluster"


def size_text(size: int) -> str:
    """A byte count as people read limits: "16 MiB", "64 KiB", "1500 bytes"."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


def too_large_message(what: str, limit: int) -> str:
    """What a peer or client is told when `what` ("request", "message") exceeds `limit`."""
    return f"{what} too large (limit {size_text(limit)})"

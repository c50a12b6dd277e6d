"""The automerge-repo network protocol, version 1, as a pure codec, plus document ids.

Every WebSocket binary frame carries one CBOR map with string keys. ``decode`` turns such a
frame into one of the message dataclasses below; ``encode`` does the reverse. Nothing here
does I/O: the connection layer feeds received bytes to ``decode`` and sends what ``encode``
returns.

``decode`` reads untrusted bytes. Whatever is wrong with them, it raises
:class:`~crdtmds.errors.ProtocolError` and nothing else, so the caller can answer with an
``error`` message and close that one connection. It is as tolerant as the JavaScript and
Rust implementations are: integers written as float64, CBOR ``undefined`` for absent values,
byte strings with or without tag 64, peer metadata under ``peerMetadata`` (JavaScript) or
``metadata`` (the samod-core inside the ``automerge`` Python package), and a ``join``
without ``supportedProtocolVersions``. Unknown keys are ignored.

Document ids are 16 random bytes, base58check-encoded; their URL form is
``automerge:<id>``, optionally followed by ``#<head>|<head>...``.
"""

from __future__ import annotations

import functools
import io
import math
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import base58
import cbor2
from automerge.core import Message as AutomergeSyncMessage

from crdtmds.errors import ProtocolError

__all__ = [
    "MAX_MESSAGE_SIZE_DEFAULT",
    "PROTOCOL_VERSION",
    "DocUnavailable",
    "Ephemeral",
    "Error",
    "Ignored",
    "Join",
    "Message",
    "Peer",
    "Request",
    "Sync",
    "decode",
    "document_id_to_bytes",
    "document_url",
    "encode",
    "is_document_id",
    "new_document_id",
    "parse_document_url",
]

PROTOCOL_VERSION: Final = "1"
MAX_MESSAGE_SIZE_DEFAULT: Final = 16 * 1024 * 1024

# The deepest legitimate message (remote-heads-changed) nests four containers.
MAX_NESTING: Final = 16
MAX_COUNT: Final = 2**64 - 1
DOCUMENT_ID_BYTES: Final = 16
HEAD_BYTES: Final = 32  # an Automerge change hash
URL_PREFIX: Final = "automerge:"

# Message types JavaScript peers send that carry nothing crdtmds acts on. A JavaScript
# client says "leave" before it closes its socket.
IGNORED_TYPES: Final = frozenset({"remote-subscription-change", "remote-heads-changed", "leave"})

# Characters of the base58 alphabet. Checking them (and a length cap) before decoding keeps
# the quadratic base58 decoding away from hostile long strings, and refuses the whitespace
# that the base58 package would otherwise strip.
_BASE58_PATTERN: Final = re.compile(r"[1-9A-HJ-NP-Za-km-z]+")


@dataclass(frozen=True, slots=True)
class Join:
    """Sent by the dialing peer first: who it is and which protocol versions it speaks."""

    sender_id: str
    supported_protocol_versions: tuple[str, ...] = (PROTOCOL_VERSION,)
    peer_metadata: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # Callers may pass a list; the field stays hashable and immutable.
        object.__setattr__(
            self, "supported_protocol_versions", tuple(self.supported_protocol_versions)
        )


@dataclass(frozen=True, slots=True)
class Peer:
    """The listener's answer to a `Join`: the handshake is complete once this arrives."""

    sender_id: str
    target_id: str
    selected_protocol_version: str = PROTOCOL_VERSION
    peer_metadata: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """The first sync message for a document the sender does not have yet."""

    sender_id: str
    target_id: str
    document_id: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Sync:
    """An Automerge sync message for one document."""

    sender_id: str
    target_id: str
    document_id: str
    data: bytes


@dataclass(frozen=True, slots=True)
class DocUnavailable:
    """The answer to a `Request` for a document the sender cannot share."""

    sender_id: str
    target_id: str
    document_id: str


@dataclass(frozen=True, slots=True)
class Error:
    """A protocol fault, reported just before the sender closes the connection."""

    message: str


@dataclass(frozen=True, slots=True)
class Ephemeral:
    """Application data about a document that is forwarded to peers but never stored."""

    sender_id: str
    target_id: str
    document_id: str
    count: int
    session_id: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Ignored:
    """A well-formed message of a type that automerge-repo knows and crdtmds does not use."""

    type: str
    sender_id: str | None = None


Message = Join | Peer | Request | Sync | DocUnavailable | Error | Ephemeral | Ignored


# ---------------------------------------------------------------------------------------
# Document ids
# ---------------------------------------------------------------------------------------


def new_document_id() -> str:
    """A fresh random document id, as automerge-repo makes them (a UUID v4's 16 bytes)."""
    return base58.b58encode_check(uuid.uuid4().bytes).decode("ascii")


def _base58check_bytes(text: object, size: int, what: str) -> bytes:
    """The `size` bytes that `text` encodes in base58check, or ProtocolError naming `what`."""
    # `size` bytes plus the 4-byte checksum never need more than this many digits.
    max_digits = math.ceil((size + 4) * 8 / math.log2(58))
    if not isinstance(text, str) or len(text) > max_digits or not _BASE58_PATTERN.fullmatch(text):
        raise ProtocolError(f"invalid {what} {_shorten(text)}: not a base58 string")
    try:
        raw = base58.b58decode_check(text)
    except ValueError as exc:
        raise ProtocolError(f"invalid {what} {text!r}: bad checksum") from exc
    if len(raw) != size:
        raise ProtocolError(f"invalid {what} {text!r}: {len(raw)} bytes, expected {size}")
    return raw


def document_id_to_bytes(doc_id: str) -> bytes:
    """The 16 bytes a document id stands for; raises ProtocolError if it is not one."""
    if isinstance(doc_id, str):
        return _known_document_id_bytes(doc_id)
    return _base58check_bytes(doc_id, DOCUMENT_ID_BYTES, "document id")


@functools.lru_cache(maxsize=4096)
def _known_document_id_bytes(doc_id: str) -> bytes:
    """Remembered: every sync frame names its document, a server sees few ids again and
    again, and base58check costs more than the rest of a frame's header."""
    return _base58check_bytes(doc_id, DOCUMENT_ID_BYTES, "document id")


def is_document_id(s: object) -> bool:
    """Whether `s` is a valid automerge-repo document id."""
    try:
        _base58check_bytes(s, DOCUMENT_ID_BYTES, "document id")
    except ProtocolError:
        return False
    return True


def document_url(doc_id: str) -> str:
    """The ``automerge:<id>`` URL of a document."""
    document_id_to_bytes(doc_id)
    return URL_PREFIX + doc_id


def parse_document_url(url: str) -> str:
    """The document id in ``automerge:<id>``, ``automerge:<id>#<head>|<head>`` or a bare id.

    The heads name a past version of the document; they are checked (base58check change
    hashes, as JavaScript writes them) and dropped.
    """
    if not isinstance(url, str):
        raise ProtocolError(f"invalid document URL {_shorten(url)}: not a string")
    doc_id, has_heads, heads = url.removeprefix(URL_PREFIX).partition("#")
    document_id_to_bytes(doc_id)
    if has_heads:
        for head in heads.split("|"):
            _base58check_bytes(head, HEAD_BYTES, "head in document URL")
    return doc_id


# ---------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------


class _Refused:
    """Stands in for a CBOR tag we do not accept, so the field that holds it is refused."""

    __slots__ = ("tag",)

    def __init__(self, tag: int) -> None:
        self.tag = tag


def _refuse_tag(tag: int) -> Callable[[Any, bool], _Refused]:
    return lambda _value, _immutable: _Refused(tag)


# Tags cbor2 would decode into Python objects (dates, bignums, fractions, regular
# expressions, shared references...). None occurs in this protocol, and some cost a lot of
# CPU or build cyclic structures, so each becomes a _Refused marker instead.
_SEMANTIC_TAGS: Final = frozenset(
    {0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004, 43000}
)
_SEMANTIC_DECODERS: Final = {tag: _refuse_tag(tag) for tag in _SEMANTIC_TAGS}
_TYPED_ARRAY_UINT8_TAG: Final = 64


def _decode_tag(tag: cbor2.CBORTag, _immutable: bool) -> object:
    """Tag 64 (a Uint8Array) is a byte string; any other unknown tag is refused."""
    if tag.tag == _TYPED_ARRAY_UINT8_TAG and isinstance(tag.value, bytes):
        return tag.value
    return _Refused(tag.tag)


def _load_cbor(data: bytes) -> object:
    """Exactly one CBOR item from `data`, with nesting, tags and map keys kept in check."""
    stream = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(
            stream,
            tag_hook=_decode_tag,
            semantic_decoders=_SEMANTIC_DECODERS,
            max_depth=MAX_NESTING,
            strict_hashable_types=True,
            allow_duplicate_keys=False,
        )
        item = decoder.decode()
    except RecursionError as exc:
        raise ProtocolError("malformed CBOR: nesting too deep") from exc
    # cbor2 is a third-party parser fed hostile bytes: whatever it raises means the bytes
    # are not a CBOR item we can use.
    except Exception as exc:
        raise ProtocolError(f"malformed CBOR: {exc}") from exc
    if stream.tell() != len(data):
        raise ProtocolError(f"malformed CBOR: {len(data) - stream.tell()} bytes after the item")
    return item


def _fields_of(item: object) -> dict[str, object]:
    """The top-level map, with `undefined` entries dropped as absent."""
    if not isinstance(item, dict):
        raise ProtocolError(f"expected a CBOR map, got {_kind(item)}")
    fields: dict[str, object] = {}
    for key, value in item.items():
        if not isinstance(key, str):
            raise ProtocolError(f"map key {_shorten(key)} is not a string")
        if value is not cbor2.undefined:
            fields[key] = value
    return fields


def _string(fields: Mapping[str, object], key: str, *, non_empty: bool = True) -> str:
    value = fields.get(key)
    if value is None:
        raise ProtocolError(f"missing field {key!r}")
    if not isinstance(value, str):
        raise ProtocolError(f"field {key!r} must be a string, got {_kind(value)}")
    if non_empty and not value:
        raise ProtocolError(f"field {key!r} is empty")
    return value


def _optional_string(fields: Mapping[str, object], key: str, default: str) -> str:
    if fields.get(key) is None:
        return default
    return _string(fields, key)


def _bytes(fields: Mapping[str, object], key: str) -> bytes:
    value = fields.get(key)
    if value is None:
        raise ProtocolError(f"missing field {key!r}")
    if not isinstance(value, bytes):
        raise ProtocolError(f"field {key!r} must be a byte string, got {_kind(value)}")
    return value


def _document_id(fields: Mapping[str, object]) -> str:
    """The document id, given as a string or (as samod also accepts) as its 16 bytes."""
    value = fields.get("documentId")
    if isinstance(value, bytes):
        if len(value) != DOCUMENT_ID_BYTES:
            raise ProtocolError(f"invalid document id: {len(value)} bytes")
        return base58.b58encode_check(value).decode("ascii")
    doc_id = _string(fields, "documentId")
    document_id_to_bytes(doc_id)
    return doc_id


def _sync_data(fields: Mapping[str, object]) -> bytes:
    """The `data` of sync and request: a non-empty, parseable Automerge sync message."""
    data = _bytes(fields, "data")
    if not data:
        raise ProtocolError("field 'data' is empty")
    try:
        AutomergeSyncMessage.decode(data)
    # automerge raises a plain Exception for every parse failure.
    except Exception as exc:
        raise ProtocolError(f"field 'data' is not an Automerge sync message: {exc}") from exc
    return data


def _count(fields: Mapping[str, object]) -> int:
    """A non-negative integer that JavaScript may have written as a float64."""
    value = fields.get("count")
    if value is None:
        raise ProtocolError("missing field 'count'")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"field 'count' must be an integer, got {_kind(value)}")
    if not 0 <= value <= MAX_COUNT:
        raise ProtocolError(f"field 'count' out of range: {value}")
    return value


def _protocol_versions(fields: Mapping[str, object]) -> tuple[str, ...]:
    value = fields.get("supportedProtocolVersions")
    if value is None:
        return (PROTOCOL_VERSION,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolError("field 'supportedProtocolVersions' must be a list of strings")
    return tuple(value)


def _metadata(fields: Mapping[str, object]) -> dict[str, Any] | None:
    """Peer metadata from `peerMetadata`, or else from `metadata`; absent or null is None."""
    key = "peerMetadata" if fields.get("peerMetadata") is not None else "metadata"
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProtocolError(f"field {key!r} must be a map, got {_kind(value)}")
    return _plain_map(value, key)


def _plain_map(value: dict[Any, Any], path: str) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise ProtocolError(f"{path}: map key {_shorten(key)} is not a string")
        if item is not cbor2.undefined:
            cleaned[key] = _plain(item, f"{path}.{key}")
    return cleaned


def _plain(value: object, path: str) -> Any:
    """`value` as plain data (JSON types plus bytes); `undefined` in a list reads as None."""
    if value is None or value is cbor2.undefined:
        return None
    if isinstance(value, bool | int | float | str | bytes):
        return value
    if isinstance(value, list):
        return [_plain(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        return _plain_map(value, path)
    raise ProtocolError(f"{path}: unsupported value {_kind(value)}")


def _decode_join(fields: Mapping[str, object]) -> Join:
    return Join(
        sender_id=_string(fields, "senderId"),
        supported_protocol_versions=_protocol_versions(fields),
        peer_metadata=_metadata(fields),
    )


def _decode_peer(fields: Mapping[str, object]) -> Peer:
    return Peer(
        sender_id=_string(fields, "senderId"),
        target_id=_string(fields, "targetId"),
        selected_protocol_version=_optional_string(
            fields, "selectedProtocolVersion", PROTOCOL_VERSION
        ),
        peer_metadata=_metadata(fields),
    )


def _decode_request(fields: Mapping[str, object]) -> Request:
    return Request(
        sender_id=_string(fields, "senderId"),
        target_id=_string(fields, "targetId"),
        document_id=_document_id(fields),
        data=_sync_data(fields),
    )


def _decode_sync(fields: Mapping[str, object]) -> Sync:
    return Sync(
        sender_id=_string(fields, "senderId"),
        target_id=_string(fields, "targetId"),
        document_id=_document_id(fields),
        data=_sync_data(fields),
    )


def _decode_doc_unavailable(fields: Mapping[str, object]) -> DocUnavailable:
    return DocUnavailable(
        sender_id=_string(fields, "senderId"),
        target_id=_string(fields, "targetId"),
        document_id=_document_id(fields),
    )


def _decode_error(fields: Mapping[str, object]) -> Error:
    return Error(message=_string(fields, "message", non_empty=False))


def _decode_ephemeral(fields: Mapping[str, object]) -> Ephemeral:
    return Ephemeral(
        sender_id=_string(fields, "senderId"),
        target_id=_string(fields, "targetId"),
        document_id=_document_id(fields),
        count=_count(fields),
        session_id=_string(fields, "sessionId"),
        data=_bytes(fields, "data"),
    )


_DECODERS: Final[dict[str, Callable[[Mapping[str, object]], Message]]] = {
    "join": _decode_join,
    "peer": _decode_peer,
    "request": _decode_request,
    "sync": _decode_sync,
    "doc-unavailable": _decode_doc_unavailable,
    "error": _decode_error,
    "ephemeral": _decode_ephemeral,
}


def _decode_ignored(message_type: str, fields: Mapping[str, object]) -> Ignored:
    sender_id = fields.get("senderId")
    return Ignored(type=message_type, sender_id=sender_id if isinstance(sender_id, str) else None)


def decode(data: bytes, *, max_size: int = MAX_MESSAGE_SIZE_DEFAULT) -> Message:
    """Decode one frame received from a peer.

    Raises ProtocolError, and only that, for anything that is not one well-formed message
    of at most `max_size` bytes.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(f"expected bytes, got {_kind(data)}")
    size = memoryview(data).nbytes
    if size > max_size:
        raise ProtocolError(f"message of {size} bytes exceeds the limit of {max_size}")
    fields = _fields_of(_load_cbor(bytes(data)))
    message_type = _string(fields, "type")
    decoder = _DECODERS.get(message_type)
    if decoder is not None:
        return decoder(fields)
    if message_type in IGNORED_TYPES:
        return _decode_ignored(message_type, fields)
    raise ProtocolError(f"unknown message type {_shorten(message_type)}")


# ---------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------


def _metadata_fields(metadata: dict[str, Any] | None) -> dict[str, Any]:
    # JavaScript reads `peerMetadata`; the samod-core in automerge 0.2.0.dev4 reads only
    # `metadata`. Both get the same map.
    if metadata is None:
        return {}
    return {"peerMetadata": metadata, "metadata": metadata}


def _wire_fields(message: Message) -> dict[str, Any]:
    """The CBOR map of `message`, keys in the order the JavaScript implementation uses."""
    match message:
        case Join():
            return {
                "type": "join",
                "senderId": message.sender_id,
                "supportedProtocolVersions": list(message.supported_protocol_versions),
                **_metadata_fields(message.peer_metadata),
            }
        case Peer():
            return {
                "type": "peer",
                "senderId": message.sender_id,
                "targetId": message.target_id,
                "selectedProtocolVersion": message.selected_protocol_version,
                **_metadata_fields(message.peer_metadata),
            }
        case Request() | Sync():
            return {
                "type": "request" if isinstance(message, Request) else "sync",
                "senderId": message.sender_id,
                "targetId": message.target_id,
                "documentId": message.document_id,
                "data": bytes(message.data),
            }
        case DocUnavailable():
            return {
                "type": "doc-unavailable",
                "senderId": message.sender_id,
                "targetId": message.target_id,
                "documentId": message.document_id,
            }
        case Error():
            return {"type": "error", "message": message.message}
        case Ephemeral():
            return {
                "type": "ephemeral",
                "senderId": message.sender_id,
                "targetId": message.target_id,
                "count": message.count,
                "sessionId": message.session_id,
                "documentId": message.document_id,
                "data": bytes(message.data),
            }
        case Ignored():
            sender = {} if message.sender_id is None else {"senderId": message.sender_id}
            return {"type": message.type, **sender}
    raise ProtocolError(f"cannot encode {_kind(message)}: not a protocol message")


def encode(message: Message) -> bytes:
    """The frame to send for `message`: one definite-length CBOR map, byte strings untagged.

    Raises ProtocolError if `message` is not a message or holds a value CBOR cannot carry.
    """
    fields = _wire_fields(message)
    try:
        return cbor2.dumps(fields)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise ProtocolError(f"cannot encode {type(message).__name__}: {exc}") from exc


# ---------------------------------------------------------------------------------------
# Error text
# ---------------------------------------------------------------------------------------


def _kind(value: object) -> str:
    if isinstance(value, _Refused):
        return f"CBOR tag {value.tag}"
    if value is cbor2.undefined:
        return "undefined"
    return type(value).__name__


def _shorten(value: object, limit: int = 40) -> str:
    text = repr(value) if isinstance(value, str | bytes) else _kind(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

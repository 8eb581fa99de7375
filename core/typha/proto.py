"""Typha's sync protocol on the wire: Calico's messages (``typha/pkg/syncproto/sync_proto.go``)
in length-prefixed JSON envelopes.

The conversation is Calico's. The client connects and sends ``MsgClientHello``; the
server answers ``MsgServerHello``, then sends the snapshot as ``MsgKVs`` batches, then
``MsgSyncStatus`` (``InSync`` once it is in sync with the datastore), then the changes
as further ``MsgKVs`` (and a ``MsgSyncStatus`` whenever its status changes). At any
time after the handshake the server may send ``MsgPing``; the client answers
``MsgPong`` at once.

Calico encodes these with gob, which only Go speaks. Here each message is one frame:
a 4-byte big-endian length, then that many bytes of UTF-8 JSON, an object whose
``Type`` is Calico's Go type name and whose other keys are that type's fields with
their Go names::

    {"Type": "MsgClientHello", "Hostname": "node1", "Info": "calico-node",
     "Version": "0.1.0", "SyncerType": "felix"}

Unknown keys are ignored (as gob ignores unknown fields); an unknown ``Type`` or a
frame over ``MAX_FRAME`` bytes is a protocol error. Differences from Calico:
timestamps are Unix seconds (floats); ``MsgSyncStatus`` also carries ``Revision``, the
datastore revision of the state sent so far; compression (``MsgDecoderRestart``,
``MsgACK``) is not offered.

A ``SerializedUpdate`` is one key's change: ``Key`` (the resource's v3 path),
``Value`` (the resource in the codec's v3 JSON form with ``metadata.resourceVersion``
moved to ``V3ResourceVersion``, as Calico does; null for a deletion), ``Revision``
(the datastore revision of the change) and ``UpdateType`` (``KVNew``, ``KVUpdated``,
``KVDeleted``).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

DEFAULT_PORT = 5473
MAX_FRAME = 64 * 1024 * 1024
_LENGTH = struct.Struct(">I")

# Syncer types (``SyncerType``); pycalico's agent reads every resource through one.
FELIX = "felix"
SYNCER_TYPES = (FELIX,)

# Sync statuses (``api.SyncStatus``).
WAIT_FOR_DATASTORE = "WaitForDatastore"
RESYNC_IN_PROGRESS = "ResyncInProgress"
IN_SYNC = "InSync"

# Update types (``api.UpdateType``), by the datastore event types they carry.
UPDATE_TYPES = {"added": "KVNew", "modified": "KVUpdated", "deleted": "KVDeleted"}
EVENT_TYPES = {v: k for k, v in UPDATE_TYPES.items()}


class ProtocolError(Exception):
    """A frame or message that breaks the protocol: the connection is unusable."""


@attrs.frozen
class ClientHello:
    hostname: str
    info: str = ""
    version: str = ""
    syncer_type: str = FELIX


@attrs.frozen
class ServerHello:
    version: str
    syncer_type: str = FELIX
    server_conn_id: int = 0


@attrs.frozen
class SyncStatus:
    sync_status: str
    revision: Any = None


@attrs.frozen
class Ping:
    timestamp: float


@attrs.frozen
class Pong:
    ping_timestamp: float
    pong_timestamp: float


@attrs.frozen
class SerializedUpdate:
    key: str
    value: Any  # a dict (the resource's JSON), None for a deletion
    revision: Any
    update_type: str
    v3_resource_version: str = ""


@attrs.frozen
class KVs:
    kvs: tuple[SerializedUpdate, ...]


MESSAGES: dict[str, type] = {
    "MsgClientHello": ClientHello,
    "MsgServerHello": ServerHello,
    "MsgSyncStatus": SyncStatus,
    "MsgPing": Ping,
    "MsgPong": Pong,
    "MsgKVs": KVs,
}
_NAMES = {cls: name for name, cls in MESSAGES.items()}
_GO_SPELLING = {"kvs": "KVs", "server_conn_id": "ServerConnID", "v3_resource_version": "V3ResourceVersion"}


def go_name(field: str) -> str:
    """A field's name as Calico's Go struct spells it: ``syncer_type`` -> ``SyncerType``."""
    return _GO_SPELLING.get(field) or "".join(part.capitalize() for part in field.split("_"))


_converter = cattrs.Converter()
for _cls in (SerializedUpdate, *MESSAGES.values()):  # an item's hooks before its container's
    _renames = {a.name: override(rename=go_name(a.name)) for a in attrs.fields(_cls)}
    _converter.register_structure_hook(_cls, make_dict_structure_fn(_cls, _converter, **_renames))
    _converter.register_unstructure_hook(_cls, make_dict_unstructure_fn(_cls, _converter, **_renames))


def frame(body: bytes) -> bytes:
    """One frame around an encoded message."""
    return _LENGTH.pack(len(body)) + body


def encode(message: Any) -> bytes:
    """The frame of a message."""
    data = {"Type": _NAMES[type(message)], **_converter.unstructure(message)}
    return frame(json.dumps(data, separators=(",", ":")).encode())


def update_json(update: SerializedUpdate) -> str:
    """One update's JSON, to be shared by many ``kvs_frame`` calls (the server encodes
    each change once for all its clients)."""
    return json.dumps(_converter.unstructure(update), separators=(",", ":"))


def kvs_frame(updates_json: list[str]) -> bytes:
    """The frame of a ``MsgKVs`` made of updates already encoded by ``update_json``."""
    return frame(('{"Type":"MsgKVs","KVs":[' + ",".join(updates_json) + "]}").encode())


def decode(body: bytes) -> Any:
    """The message in one frame's body; ProtocolError if it is not one."""
    try:
        data = json.loads(body)
        cls = MESSAGES[data.pop("Type")]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ProtocolError(f"not a sync protocol message: {body[:80]!r}") from None
    try:
        return _converter.structure(data, cls)
    except Exception as exc:  # cattrs groups every structural problem
        raise ProtocolError(f"bad {_NAMES[cls]}: {'; '.join(cattrs.transform_error(exc))}") from None


class Decoder:
    """Frames out of a byte stream: ``feed`` what arrived, get the complete messages."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(self._buffer)
            if size > MAX_FRAME:
                raise ProtocolError(f"frame of {size} bytes is over the {MAX_FRAME}-byte limit")
            end = _LENGTH.size + size
            if len(self._buffer) < end:
                break
            messages.append(decode(bytes(self._buffer[_LENGTH.size:end])))
            del self._buffer[:end]
        return messages


async def read_message(reader: Any) -> Any:
    """The next message from an ``asyncio.StreamReader``; IncompleteReadError at EOF."""
    (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes is over the {MAX_FRAME}-byte limit")
    return decode(await reader.readexactly(size))

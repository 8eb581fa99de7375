"""Typha's wire format: Calico's message and field names in length-prefixed JSON frames."""

import json
import struct

import pytest

from pycalico.core.typha import proto


def body(frame: bytes) -> dict:
    (size,) = struct.unpack(">I", frame[:4])
    assert size == len(frame) - 4
    return json.loads(frame[4:])


def test_messages_carry_calicos_type_and_field_names():
    hello = proto.ClientHello("node1", "calico-node", "v0.1.0", "felix")
    assert body(proto.encode(hello)) == {
        "Type": "MsgClientHello", "Hostname": "node1", "Info": "calico-node", "Version": "v0.1.0",
        "SyncerType": "felix",
    }
    assert body(proto.encode(proto.ServerHello("v0.1.0", "felix", 7))) == {
        "Type": "MsgServerHello", "Version": "v0.1.0", "SyncerType": "felix", "ServerConnID": 7,
    }
    assert body(proto.encode(proto.Pong(1.5, 2.5))) == {"Type": "MsgPong", "PingTimestamp": 1.5, "PongTimestamp": 2.5}
    update = proto.SerializedUpdate("/calico/resources/v3/projectcalico.org/ippools/p", {"kind": "IPPool"}, 12,
                                    "KVNew", "12")
    assert body(proto.kvs_frame([proto.update_json(update)])) == {"Type": "MsgKVs", "KVs": [{
        "Key": "/calico/resources/v3/projectcalico.org/ippools/p", "Value": {"kind": "IPPool"}, "Revision": 12,
        "UpdateType": "KVNew", "V3ResourceVersion": "12",
    }]}


@pytest.mark.parametrize("message", [
    proto.ClientHello("node1"),
    proto.ServerHello("v1", "felix", 3),
    proto.SyncStatus(proto.IN_SYNC, 42),
    proto.SyncStatus(proto.RESYNC_IN_PROGRESS, "pods=5,nodes=9"),
    proto.Ping(1700000000.25),
    proto.Pong(1700000000.25, 1700000000.5),
    proto.KVs((proto.SerializedUpdate("k", None, 9, "KVDeleted"),
               proto.SerializedUpdate("j", {"a": [1, 2]}, 8, "KVUpdated", "8"))),
])
def test_every_message_round_trips(message):
    (decoded,) = proto.Decoder().feed(proto.encode(message))
    assert decoded == message


def test_decoder_reassembles_frames_split_anywhere_and_several_per_read():
    messages = [proto.Ping(float(i)) for i in range(5)]
    stream = b"".join(proto.encode(m) for m in messages)
    decoder = proto.Decoder()
    got = []
    for i in range(0, len(stream), 7):  # reads that cut frames and lengths apart
        got += decoder.feed(stream[i:i + 7])
    assert got == messages
    assert proto.Decoder().feed(stream) == messages


def test_unknown_keys_are_ignored_as_gob_does():
    data = json.dumps({"Type": "MsgPing", "Timestamp": 3.0, "FutureField": True}).encode()
    assert proto.Decoder().feed(proto.frame(data)) == [proto.Ping(3.0)]


@pytest.mark.parametrize("data, problem", [
    (b'{"Type": "MsgNope"}', "not a sync protocol message"),
    (b"[1, 2]", "not a sync protocol message"),
    (b"\xff\xfe", "not a sync protocol message"),
    (b'{"Type": "MsgPing"}', "bad MsgPing"),
])
def test_broken_messages_are_protocol_errors(data, problem):
    with pytest.raises(proto.ProtocolError, match=problem):
        proto.Decoder().feed(proto.frame(data))


def test_a_frame_over_the_limit_is_refused_before_it_is_read():
    with pytest.raises(proto.ProtocolError, match="over the"):
        proto.Decoder().feed(struct.pack(">I", proto.MAX_FRAME + 1))

"""GDB Remote Serial Protocol framing (GDB manual E.1), incl. fuzzing the decoder."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pyvmm.debug.rsp import (
    Ack,
    Interrupt,
    Malformed,
    Packet,
    PacketDecoder,
    checksum,
    encode_packet,
    escape_binary,
    unescape_binary,
)


def test_checksum_is_the_modulo_256_sum():
    # The manual's example: "$m4015bc,2#5a".
    assert encode_packet(b"m4015bc,2") == b"$m4015bc,2#5a"
    assert checksum(b"\xff\x02") == 1


def test_decoder_events():
    decoder = PacketDecoder()
    events = decoder.feed(b"+$g#67-\x03junk$m0,1#00")
    assert events == [Ack(True), Packet(b"g"), Ack(False), Interrupt(),
                      Malformed("bad checksum")]


def test_packets_split_across_reads():
    decoder = PacketDecoder()
    frame = encode_packet(b"qSupported:swbreak+")
    events = []
    for byte in frame:
        events += decoder.feed(bytes((byte,)))
    assert events == [Packet(b"qSupported:swbreak+")]


def test_oversized_packet_is_dropped_not_buffered():
    decoder = PacketDecoder(max_packet=16)
    events = decoder.feed(b"$" + b"x" * 1000 + b"#00$g#67")
    assert events == [Malformed("packet longer than 16 bytes"), Packet(b"g")]
    assert decoder.dropped == 1


@given(st.binary(max_size=64))
def test_escape_round_trip(data):
    escaped = escape_binary(data)
    assert not set(escaped) & set(b"#$*") or b"}" in escaped
    assert unescape_binary(escaped) == data


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=40), max_size=10), st.binary(max_size=200))
def test_decoder_never_fails_and_finds_every_good_packet(payloads, noise):
    clean = [p.replace(b"#", b"").replace(b"$", b"") for p in payloads]
    stream = noise.replace(b"$", b"") + b"".join(encode_packet(p) for p in clean)
    events = PacketDecoder().feed(stream)
    assert [e.payload for e in events if isinstance(e, Packet)][-len(clean) or None:] == \
        (clean if clean else [])

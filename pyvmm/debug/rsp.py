"""GDB Remote Serial Protocol framing (GDB manual, appendix E "Remote Protocol").

A packet is ``$payload#cc`` where ``cc`` is the modulo-256 sum of the payload
bytes in two hex digits (E.1 "Overview").  The receiver answers ``+`` (good)
or ``-`` (bad checksum: resend) unless no-ack mode was negotiated
(``QStartNoAckMode``).  A lone 0x03 byte outside a packet is an interrupt
request (E.12 "Interrupts").  In binary data (``X``, ``qXfer`` replies) the
bytes ``#``, ``$``, ``}`` and ``*`` are sent as ``}`` followed by the byte
XOR 0x20 (E.1, "Binary data").

The decoder never trusts the client: a packet longer than MAX_PACKET is
dropped (and counted), a bad checksum is answered with ``-``, junk between
packets is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_PACKET = 0x4000  # what qSupported advertises as PacketSize
INTERRUPT = 0x03
_ESCAPED = frozenset(b"#$}*")


@dataclass(frozen=True)
class Packet:
    payload: bytes


@dataclass(frozen=True)
class Interrupt:
    """The client sent 0x03 (Ctrl-C in gdb)."""


@dataclass(frozen=True)
class Ack:
    good: bool


@dataclass(frozen=True)
class Malformed:
    """A packet that was dropped: bad checksum or too long."""

    why: str


Event = Packet | Interrupt | Ack | Malformed


def checksum(payload: bytes) -> int:
    return sum(payload) & 0xFF


def encode_packet(payload: bytes) -> bytes:
    """Frame a reply; `payload` must already be escaped if it holds binary data."""
    return b"$" + payload + b"#" + b"%02x" % checksum(payload)


def escape_binary(data: bytes) -> bytes:
    out = bytearray()
    for byte in data:
        if byte in _ESCAPED:
            out += bytes((0x7D, byte ^ 0x20))
        else:
            out.append(byte)
    return bytes(out)


def unescape_binary(data: bytes) -> bytes:
    """The inverse of escape_binary; a trailing lone escape byte is ValueError."""
    out = bytearray()
    index = 0
    while index < len(data):
        byte = data[index]
        if byte == 0x7D:
            index += 1
            if index >= len(data):
                raise ValueError("binary data ends in an escape byte")
            byte = data[index] ^ 0x20
        out.append(byte)
        index += 1
    return bytes(out)


class PacketDecoder:
    """Incremental: feed() bytes as they arrive, get the events they complete."""

    _IDLE, _PAYLOAD, _CHECK1, _CHECK2 = range(4)

    def __init__(self, max_packet: int = MAX_PACKET) -> None:
        self.max_packet = max_packet
        self._state = self._IDLE
        self._payload = bytearray()
        self._check = 0
        self._overflow = False
        self.dropped = 0

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        for byte in data:
            state = self._state
            if state == self._IDLE:
                if byte == 0x24:  # '$'
                    self._state = self._PAYLOAD
                    self._payload.clear()
                    self._overflow = False
                elif byte == INTERRUPT:
                    events.append(Interrupt())
                elif byte == 0x2B:  # '+'
                    events.append(Ack(True))
                elif byte == 0x2D:  # '-'
                    events.append(Ack(False))
                # anything else between packets is line noise: skipped
            elif state == self._PAYLOAD:
                if byte == 0x23:  # '#'
                    self._state = self._CHECK1
                elif byte == 0x24:  # '$' restarts: the previous packet was cut short
                    self._payload.clear()
                    self._overflow = False
                    self.dropped += 1
                    events.append(Malformed("packet restarted before its end"))
                elif len(self._payload) < self.max_packet:
                    self._payload.append(byte)
                else:
                    self._overflow = True
            elif state == self._CHECK1:
                self._check = _hex_digit(byte)
                self._state = self._CHECK2
            else:
                low = _hex_digit(byte)
                self._state = self._IDLE
                payload = bytes(self._payload)
                if self._overflow:
                    self.dropped += 1
                    events.append(Malformed(f"packet longer than {self.max_packet} bytes"))
                elif self._check < 0 or low < 0 or (self._check << 4 | low) != checksum(
                        payload):
                    self.dropped += 1
                    events.append(Malformed("bad checksum"))
                else:
                    events.append(Packet(payload))
        return events


def _hex_digit(byte: int) -> int:
    if 0x30 <= byte <= 0x39:
        return byte - 0x30
    if 0x61 <= byte <= 0x66:
        return byte - 0x61 + 10
    if 0x41 <= byte <= 0x46:
        return byte - 0x41 + 10
    return -1

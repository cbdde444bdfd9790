"""The stub's packet handling in-process, on a real interpreter VM.

Register layouts are checked against their own target description, and the
dispatcher is fuzzed: no payload may raise anything but the stub's own
control-flow signals (resume, detach, kill).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvmm.cpu.state import CpuState
from pyvmm.debug import registers as regs
from pyvmm.debug.gdbstub import GdbStub, _Detach, _Kill, _Resume
from pyvmm.debug.target import DebugTarget
from pyvmm.vm import ImageSpec, VirtualMachine


@pytest.mark.parametrize("architecture", sorted(regs.LAYOUTS))
def test_target_description_matches_the_g_packet(architecture):
    rows = regs.LAYOUTS[architecture]
    root = ET.fromstring(regs.target_xml(architecture))
    assert root.find("architecture").text == architecture
    described = [(r.get("name"), int(r.get("bitsize")), int(r.get("regnum")))
                 for r in root.iter("reg")]
    assert described == [(row.name, row.bits, n) for n, row in enumerate(rows)]
    state = CpuState()
    assert len(regs.encode_all(rows, state)) == 2 * sum(b for _, b, _ in described) // 8


def test_register_round_trip_through_g_and_G():
    state = CpuState()
    state.gprs = [(i + 1) * 0x1111111111111111 & (2**64 - 1) for i in range(16)]
    state.rip = 0xFFFFFFFF81000000
    encoded = regs.encode_all(regs.AMD64, state)
    fresh = CpuState()
    regs.decode_into(regs.AMD64, fresh, encoded)
    assert fresh.gprs == state.gprs and fresh.rip == state.rip
    assert regs.encode_all(regs.AMD64, fresh) == encoded


def test_full_tag_word_from_the_abridged_one():
    """SDM Vol. 1 §8.1.7: 00 valid, 01 zero, 10 special, 11 empty, by physical register."""
    state = CpuState()
    image = bytearray(512)
    image[2:4] = (6 << 11).to_bytes(2, "little")  # TOP = 6
    image[4] = 0b11000000 | 0b00000001  # physical 6, 7 and 0 in use
    image[32:42] = (0x3FFF << 64 | 1 << 63).to_bytes(10, "little")  # ST0 (phys 6) = 1.0
    image[48:58] = bytes(10)  # ST1 (phys 7) = +0
    image[64:74] = (0x7FFF << 64 | 1 << 63).to_bytes(10, "little")  # ST2 (phys 0) = inf
    state.fpu_image = bytes(image)
    ftag = next(row for row in regs.AMD64 if row.name == "ftag")
    word = ftag.get(state)
    assert [(word >> (2 * p)) & 3 for p in range(8)] == [0b10, 3, 3, 3, 3, 3, 0b00, 0b01]


class RecordingClient:
    """Stands in for the socket: what the stub sends outside of replies."""

    alive = True
    no_ack = False

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, payload: bytes) -> None:
        self.sent.append(payload)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def stub():
    vm = VirtualMachine(engine="interp", ram_size=4 << 20)
    vm.load(ImageSpec.bundled("hello"))
    server = GdbStub(vm, "tcp::0", wait_for_client=False)
    target = DebugTarget(vm)
    server.client = RecordingClient()
    yield server, target
    server.client = None
    server.close()
    vm.close()


COMMAND_LETTERS = st.sampled_from(list(b"?gGpPmMXZzHTqQvDk") + list(b"xyz!"))


@settings(max_examples=400, deadline=None)
@given(COMMAND_LETTERS, st.binary(max_size=48))
def test_dispatch_never_raises(stub, letter, rest):
    server, target = stub
    payload = bytes((letter,)) + rest
    try:
        reply = server._dispatch(payload, target)
    except (_Resume, _Detach, _Kill):
        return
    finally:
        target.remove_all()
        server.client.no_ack = False
    assert reply is None or isinstance(reply, bytes)


def test_monitor_commands(stub):
    server, target = stub
    client = server.client

    def monitor(text: str) -> str:
        client.sent.clear()
        assert server._dispatch(b"qRcmd," + text.encode().hex().encode(), target) == b"OK"
        return b"".join(bytes.fromhex(p[1:].decode()) for p in client.sent).decode()

    assert "cs=0000" in monitor("info registers")
    assert "paging is off" in monitor("info mem")
    # The boot sector's signature, read as physical memory.
    assert "00007dfe: 55 aa" in monitor("xp/2 0x7dfe")
    assert "unknown monitor command" in monitor("frobnicate")
    assert "snapshot not saved" in monitor("snapshot /nonexistent/dir/x.pvs")

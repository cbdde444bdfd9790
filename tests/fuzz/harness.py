"""A board driven only through its buses and clock, as a guest drives it.

An operation is a small tuple: ("out", port, size, value), ("in", port, size),
("mmio-read"/"mmio-write", address, size[, value]), ("advance", ns), ("input",
bytes) for host-typed serial input, and ("hypercall", [RAX, RBX, RCX, RSI,
RDI]).  Ports are drawn from the board's own port map, so a device added to
the board is fuzzed without changing this file.
"""

from __future__ import annotations

import copy
import json

from hypothesis import strategies as st

from pyvmm.board.pc import PcBoard
from pyvmm.console import OutputCapture
from pyvmm.machine.clock import ClockSource
from pyvmm.paravirt.abi import ARG_REGISTERS, HYPERCALL_ACCESS_SIZE, HYPERCALL_PORT, RAX

RAM = 4 << 20
SIZES = (1, 2, 4)


class RegisterFile:
    """The calling vCPU's GPRs, for the hypercall device (abi.HypercallCpu)."""

    def __init__(self) -> None:
        self.regs = [0] * 16

    def get_registers(self) -> list[int]:
        return list(self.regs)

    def set_registers(self, values: dict[int, int]) -> None:
        for index, value in values.items():
            self.regs[index] = value


def make_board() -> tuple[PcBoard, OutputCapture]:
    out = OutputCapture()
    board = PcBoard(ram_size=RAM, serial_output=out, debugcon_output=out,
                    clock_source=ClockSource.MANUAL)
    board.cpu_access = RegisterFile()
    return board, out


def port_ranges(board: PcBoard) -> list[tuple[int, int]]:
    return [(entry.base, entry.length) for entry in board.ports.ranges]


def device_table(board: PcBoard) -> list[tuple[str, object]]:
    """(name, device) for every device whose state a snapshot carries."""
    return board.snapshot_devices()


def _interesting(value: int, size: int) -> int:
    return value & ((1 << (8 * size)) - 1)


def operations(board: PcBoard) -> st.SearchStrategy:
    ranges = port_ranges(board)
    port = st.sampled_from(ranges).flatmap(
        lambda r: st.integers(r[0], r[0] + r[1] - 1))
    size = st.sampled_from(SIZES)
    byte_values = st.one_of(st.integers(0, 0xFF), st.sampled_from(
        (0x00, 0x01, 0x0A, 0x0B, 0x0C, 0x11, 0x20, 0x34, 0x36, 0x60, 0x80, 0xAA, 0xC0, 0xD1,
         0xE0, 0xF2, 0xF4, 0xFE, 0xFF)))
    value = st.one_of(byte_values, st.integers(0, 0xFFFFFFFF))
    call = st.lists(st.one_of(st.integers(0, 8), st.integers(0, (1 << 64) - 1),
                              st.sampled_from((0, 10_000, 10**6, 3600 * 10**9, 1, 0x1000))),
                    min_size=5, max_size=5)
    return st.one_of(
        st.tuples(st.just("out"), port, size, value),
        st.tuples(st.just("in"), port, size),
        st.tuples(st.just("advance"), st.one_of(st.integers(0, 10**6),
                                                 st.integers(0, 10**12))),
        st.tuples(st.just("input"), st.binary(min_size=1, max_size=40)),
        st.tuples(st.just("hypercall"), call),
        st.tuples(st.just("mmio-read"), st.integers(RAM, (1 << 32) - 1), size),
    )


def apply(board: PcBoard, op: tuple) -> object:
    """Do one operation; its guest-visible result (a read value, hypercall RAX/RBX)."""
    kind = op[0]
    if kind == "out":
        board.ports.write(op[1], op[2], _interesting(op[3], op[2]))
        result: object = None
    elif kind == "in":
        result = board.ports.read(op[1], op[2])
    elif kind == "advance":
        board.clock.advance(op[1])
        result = None
    elif kind == "input":
        board.uart.enqueue_input(op[1])
        result = None
    elif kind == "hypercall":
        cpu = board.cpu_access
        assert isinstance(cpu, RegisterFile)
        number, *args = op[1]
        cpu.regs[RAX] = number
        for index, arg in zip(ARG_REGISTERS, args, strict=True):
            cpu.regs[index] = arg
        board.ports.write(HYPERCALL_PORT, HYPERCALL_ACCESS_SIZE, number & 0xFFFFFFFF)
        result = (cpu.regs[RAX], cpu.regs[1], cpu.regs[3])
    elif kind == "mmio-read":
        result = board.mmio.read(op[1], op[2])
    else:
        raise AssertionError(kind)
    board.clock.run_due()
    board.events.drain()
    board.stop_request = None  # a reset/debug-exit request: the engine's, not the board's
    return result


def json_state(board: PcBoard) -> dict:
    """The board's state as a snapshot file would carry it (through JSON)."""
    return json.loads(json.dumps(board.get_state()))


def clone(board: PcBoard) -> tuple[PcBoard, OutputCapture]:
    """A fresh board given `board`'s state, as restoring a snapshot does."""
    other, out = make_board()
    other.set_state(copy.deepcopy(json_state(board)))
    assert isinstance(board.cpu_access, RegisterFile)
    other.cpu_access.regs = list(board.cpu_access.regs)  # type: ignore[union-attr]
    return other, out

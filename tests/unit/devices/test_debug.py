"""QEMU isa-debug-exit (0xF4) and debugcon (0xE9)."""

import io

from pyvmm.board.pc import PcBoard
from pyvmm.devices.debug import DebugConsole, DebugExit
from pyvmm.machine.stop import StopKind


def test_debug_exit_passes_value():
    seen = []
    dev = DebugExit(seen.append)
    dev.io_write(0, 1, 0x31)
    assert seen == [0x31]
    assert dev.io_read(0, 1) == 0xFF
    assert dev.io_read(0, 2) == 0xFFFF


def test_debug_exit_through_board_gives_odd_status():
    board = PcBoard(ram_size=4 << 20)
    try:
        board.ports.write(0xF4, 1, 3)
        assert board.stop_request is not None
        assert board.stop_request.kind is StopKind.DEBUG_EXIT
        assert board.stop_request.exit_code == 7
    finally:
        board.close()


def test_debugcon_writes_bytes_and_reads_back_e9():
    out = io.BytesIO()
    dev = DebugConsole(out)
    for ch in b"ok":
        dev.io_write(0, 1, ch)
    dev.io_write(0, 2, 0x0A0A)  # a word write sends its low byte only
    assert out.getvalue() == b"ok\n"
    assert dev.io_read(0, 1) == 0xE9

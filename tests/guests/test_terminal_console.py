"""The host terminal as the guest's COM1: raw mode, input reaches the guest, Ctrl-A x quits.

Runs `pyvmm run` on a pseudo-terminal, as a user at a shell would, with a
boot sector that echoes every byte it receives on COM1 (polling LSR.DR,
16550 datasheet: LSR bit 0 = data ready).
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import termios
import time

import pytest

from pyvmm.engines.registry import engine_availability
from tests.conftest import ROOT
from tests.unit.kvm.kvm_guest import assemble

ECHO_BOOT_SECTOR = """
bits 16
org 0x7c00
    mov dx, 0x3fd          ; LSR
wait_rx:
    in al, dx
    test al, 1             ; data ready
    jz wait_rx
    mov dx, 0x3f8          ; RBR
    in al, dx
    cmp al, 'q'
    je done
    out dx, al             ; echo to THR
    mov dx, 0x3fd
    jmp wait_rx
done:
    mov al, 0x10
    out 0xf4, al
    hlt
times 510-($-$$) db 0
dw 0xaa55
"""


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                data += os.read(fd, 1024)
            except OSError:
                break
    return data


def _wait_for_raw_mode(master: int, proc: subprocess.Popen) -> None:
    """Until pyvmm has the terminal in raw mode (ICANON and ECHO off): an event,
    not a guess at how long Python takes to start on a busy host."""
    while True:
        lflag = termios.tcgetattr(master)[3]
        if not lflag & (termios.ICANON | termios.ECHO):
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.01)


@pytest.fixture
def echo_image(tmp_path):
    path = tmp_path / "echo.bin"
    path.write_bytes(assemble(ECHO_BOOT_SECTOR))
    return path


@pytest.fixture(params=["kvm", "interp"])
def on_terminal(request, echo_image):
    """`pyvmm run` of the echo guest with a pseudo-terminal as its terminal;
    yields (process, master side of the terminal)."""
    ok, reason = engine_availability(request.param)
    if not ok:
        pytest.skip(reason)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "pyvmm", "run", "--engine", request.param,
                             "--boot-sector", str(echo_image)],
                            stdin=slave, stdout=slave, stderr=subprocess.PIPE, cwd=ROOT)
    os.close(slave)
    try:
        _wait_for_raw_mode(master, proc)
        yield proc, master
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_typing_and_ctrl_a_x(on_terminal):
    proc, master = on_terminal
    os.write(master, b"abc")
    assert b"abc" in _read_until(master, b"abc", 20)
    os.write(master, b"\x01h")  # Ctrl-A h: the escape help
    assert b"C-a x" in _read_until(master, b"C-a x", 10)
    os.write(master, b"\x01x")  # Ctrl-A x: quit
    assert proc.wait(timeout=20) == 0
    assert b"Ctrl-A x" in proc.stderr.read()


def test_guest_sees_typed_byte_and_exits(on_terminal):
    proc, master = on_terminal
    os.write(master, b"q")  # the guest exits through 0xF4 with 0x10
    assert proc.wait(timeout=20) == 33

"""Nothing acknowledged is lost if pyvmm is killed: a guest writes a sector, flushes, gets
both acknowledged and says so (tests/guests/virtio_kernel/blk_kill.c); the test SIGKILLs
pyvmm at that line, and the sector is in the image file.

A FLUSH is an fsync(2) of the image (pyvmm/devices/virtio/blk.py) and a completed write
is a pwrite(2) already made, so SIGKILL (no handler, no exit path runs) cannot lose it:
nothing acknowledged waits in pyvmm's memory.  Under kvm the request is served on the
device's I/O thread, with and without KVM_IOEVENTFD.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyvmm.engines.registry import engine_availability
from tests.conftest import ROOT
from tests.guests.c_build import build_c_kernel

KERNEL = Path(__file__).parent / "virtio_kernel" / "blk_kill.c"
MARKER = b"blk_kill: flushed\n"
TEXT = b"acknowledged before the kill"
WAIT = 600.0  # seconds: only a guest that never gets there fails


@pytest.fixture(scope="module")
def kernel(tmp_path_factory) -> Path:
    return build_c_kernel(KERNEL, tmp_path_factory.mktemp("blk_kill"), ["-O1"])


def wait_for_marker(process: subprocess.Popen) -> bytes:
    seen = b""
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + WAIT
    while MARKER not in seen and time.monotonic() < deadline:
        if selector.select(timeout=1.0):
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
    selector.close()
    return seen


@pytest.mark.parametrize("engine,options", [
    ("interp", []), ("jit", []), ("kvm", []), ("kvm", ["--no-ioeventfd"]),
    ("kvm", ["--irqchip", "user"])])
def test_a_flushed_write_survives_sigkill(kernel, engine, options, tmp_path):
    ok, reason = engine_availability(engine)
    if not ok:
        pytest.skip(reason)
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\xee" * 4096)
    process = subprocess.Popen(
        [sys.executable, "-m", "pyvmm", "run", "--engine", engine, *options,
         "--kernel", str(kernel), "--drive", f"file={disk},if=virtio", "--serial", "none",
         "--timeout", str(WAIT)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = wait_for_marker(process)
        assert MARKER in seen, seen
        assert process.poll() is None, "pyvmm ended by itself: the kill would prove nothing"
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
    sector = disk.read_bytes()[2 * 512:3 * 512]
    # the text with its NUL, then byte i = i mod 256 (blk_kill.c)
    assert sector == TEXT + b"\0" + bytes(i & 0xFF for i in range(len(TEXT) + 1, 512))
    assert disk.read_bytes()[:1024] == b"\xee" * 1024  # nothing else touched

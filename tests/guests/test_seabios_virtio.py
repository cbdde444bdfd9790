"""SeaBIOS boots the `hello` boot sector from a virtio-blk disk on virtio-pci.

`pyvmm run --bios bios-256k.bin --drive file=hello.img,if=virtio`: SeaBIOS
enumerates bus 0, places the function's BAR 4, finds the virtio vendor
capabilities ("using modern (1.0) virtio mode" in its log), drives the
queue itself (its virtio-blk driver polls), reads sector 0 through INT 13h
and jumps to it; the boot sector prints on COM1 and leaves through the
debug-exit port with 0x10 (status 33).  The image is hello.bin padded to
1 MiB: SeaBIOS gives a disk of one sector a logical geometry of 0 cylinders
and then refuses the CHS read of sector 0 ("could not read the boot disk").
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pyvmm.engines.registry import engine_availability
from pyvmm.guests import guest_path
from tests.conftest import ROOT

SEABIOS = Path("/usr/share/seabios/bios-256k.bin")
pytestmark = pytest.mark.skipif(not SEABIOS.exists(),
                                reason=f"{SEABIOS} is absent (Debian package seabios)")
DISK_SIZE = 1 << 20


@pytest.mark.parametrize("engine", ["interp", "jit", "kvm"])
def test_seabios_boots_hello_from_a_virtio_blk_disk(engine, tmp_path):
    ok, reason = engine_availability(engine)
    if not ok:
        pytest.skip(reason)
    disk = tmp_path / "hello.img"
    disk.write_bytes(guest_path("hello").read_bytes().ljust(DISK_SIZE, b"\0"))
    log = tmp_path / "seabios.log"
    done = subprocess.run(
        [sys.executable, "-m", "pyvmm", "run", "--engine", engine, "--bios", str(SEABIOS),
         "--drive", f"file={disk},if=virtio", "--debugcon", f"file:{log}",
         "--timeout", "600", "--stats"], cwd=ROOT, capture_output=True, timeout=900)
    out = done.stdout.decode("latin-1")
    assert done.returncode == 33, out[-2000:] + done.stderr.decode("latin-1")[-2000:]
    # (the boot sector's UART_INIT resets COM1's FIFOs: SeaBIOS's last "." may be
    # still in the transmit FIFO and go with it, as on a 16550A)
    assert "Booting from Hard Disk" in out and "Hello from a pyvmm boot sector!" in out, out
    debug = log.read_text(errors="replace")
    assert "found virtio-blk at 00:02.0" in debug
    assert "using modern (1.0) virtio mode" in debug
    assert "virtio-blk-pci-bar4" in done.stderr.decode()  # its BAR in --stats

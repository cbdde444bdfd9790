"""A guest's virtio-blk driver against `--drive`: a file the host wrote is read by
the guest, a sector the guest wrote and flushed is on the host's disk.

The guests are C kernels with polling drivers: tests/guests/virtio_kernel/
blk_driver.c over virtio-mmio (Virtio 1.2 §4.2.3, §5.2, `if=virtio-mmio`) and
blk_pci_driver.c over virtio-pci (§4.1, `if=virtio`, which also checks the
ISR with INTx and an MSI-X message reaching the local APIC's IRR).  Each
prints sector 1 on the debug console, writes sector 0, flushes, checks that
a read past the end fails, and exits 0x10.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pyvmm.engines.registry import engine_availability
from tests.conftest import ROOT
from tests.guests.c_build import build_c_kernel

KERNELS = Path(__file__).parent / "virtio_kernel"
# --drive if= -> the C driver for that transport and the name it prints.
DRIVERS = {"virtio-mmio": "blk_driver", "virtio": "blk_pci_driver"}
HOST_TEXT = b"put there by the host before boot"
GUEST_TEXT = b"written by the guest through virtio-blk"


@pytest.fixture(scope="module")
def drivers(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("virtio_kernel")
    return {interface: build_c_kernel(KERNELS / f"{name}.c", out, ["-O1"])
            for interface, name in DRIVERS.items()}


# "a->b": start under a, move to b mid-run (after the device is set up and the
# first request is done): the device and its queue move with the snapshot.
@pytest.mark.parametrize("interface", list(DRIVERS))
@pytest.mark.parametrize("engine", ["interp", "jit", "kvm", "interp->kvm", "jit->interp"])
def test_guest_reads_the_host_file_and_its_flushed_write_is_on_disk(drivers, engine, interface,
                                                                     tmp_path):
    first, _, then = engine.partition("->")
    for name in filter(None, (first, then)):
        ok, reason = engine_availability(name)
        if not ok:
            pytest.skip(reason)
    switch = ["--switch-to", then, "--switch-after-instructions", "1500"] if then else []
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(512) + HOST_TEXT + bytes(512 - len(HOST_TEXT)) + bytes(1024))
    done = subprocess.run(
        [sys.executable, "-m", "pyvmm", "run", "--engine", first, "--kernel",
         str(drivers[interface]), *switch,
         "--drive", f"file={disk},format=raw,if={interface}", "--serial", "none",
         "--timeout", "300", "--stats"],
        cwd=ROOT, capture_output=True, timeout=600)
    assert done.returncode == 33, done.stdout + done.stderr
    assert done.stdout.splitlines()[:2] == [HOST_TEXT,
                                            f"{DRIVERS[interface]}: done".encode()]
    image = disk.read_bytes()
    assert image[:len(GUEST_TEXT)] == GUEST_TEXT and image[len(GUEST_TEXT)] == 0
    assert len(image) == 2048  # nothing written past the end
    assert b"virtio-blk" in done.stderr  # its MMIO window in --stats
    if then:
        assert f"switched {first} -> {then}".encode() in done.stderr


def test_drive_options_are_checked_before_anything_runs(tmp_path):
    for option, message in ((f"file={tmp_path / 'missing.img'}", b"No such file"),
                            ("format=qcow2,file=x", b"format=qcow2: expected raw"),
                            ("if=ide,file=x", b"if=ide: expected virtio"),
                            ("readonly=on", b"a drive needs file=PATH")):
        done = subprocess.run([sys.executable, "-m", "pyvmm", "run", "hello",
                               "--drive", option], cwd=ROOT, capture_output=True, timeout=120)
        assert done.returncode == 2, (option, done.stderr)
        assert message in done.stderr and b"Traceback" not in done.stderr, done.stderr

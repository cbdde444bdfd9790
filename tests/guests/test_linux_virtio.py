"""Linux on a virtio-blk disk: an ext4 image made on the host with `mkfs.ext4 -d DIR`
is /dev/vda; the guest mounts it, prints the file the host put there, writes a
file, syncs, unmounts and powers off (`poweroff -f`: ACPI S5); the host reads
the written file back with debugfs.  And Linux with its root filesystem on
virtio-blk (`root=/dev/vda`, no initramfs): the initramfs's tree as an ext4
image.

Over virtio-pci (`--drive ...,if=virtio`) the kernel finds the function by
enumerating bus 0, places its BARs in the memory window of the DSDT's _CRS and
takes INTA# from its _PRT (GSI 17 for slot 2); this guest kernel has no
CONFIG_PCI_MSI, so INTx is its only interrupt.  Over virtio-mmio
(`if=virtio-mmio`) the kernel finds the device from the virtio_mmio.device=
option pyvmm appends.  Both boot with the
local APIC and I/O APIC (no `nolapic noapic`).
"""

from __future__ import annotations

import gzip
import shutil
import subprocess

import pytest

from pyvmm.guests import linux_build
from pyvmm.machine.stop import StopKind
from tests.conftest import run_pyvmm
from tests.guests.test_linux import ENGINE_SKIPS, GUEST, needs_guest

HOST_TEXT = "a file the host put on the ext4 disk"
GUEST_TEXT = "written-by-linux"
COMMAND = ("mkdir -p /mnt && mount -t ext4 /dev/vda /mnt && cat /mnt/hello.txt && "
           f"echo {GUEST_TEXT} > /mnt/from-guest.txt && sync && umount /mnt")
# --drive if= -> what the kernel command line needs besides the guest's own.
CMDLINE = {"virtio": "console=ttyS0 noxsave", "virtio-mmio": "console=ttyS0 noxsave"}
needs_e2fsprogs = pytest.mark.skipif(
    shutil.which("mkfs.ext4") is None or shutil.which("debugfs") is None,
    reason="mkfs.ext4 and debugfs are needed (Debian package e2fsprogs)")


ENGINES = [pytest.param(name, marks=pytest.mark.skipif(reason is not None, reason=str(reason)))
           for name, reason in ENGINE_SKIPS.items()]


def _ext4_image(source, image, size: str):  # noqa: ANN001, ANN202 - Paths
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(source), "-L", "pyvmm", str(image),
                    size], check=True, capture_output=True)
    return image


def _read_back(image, path: str) -> str:  # noqa: ANN001 - a Path
    return subprocess.run(["debugfs", "-R", f"cat {path}", str(image)],
                          capture_output=True, text=True, check=True).stdout


@needs_guest
@needs_e2fsprogs
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("interface", list(CMDLINE))
@pytest.mark.parametrize("engine", ENGINES)
def test_linux_mounts_an_ext4_virtio_disk_and_its_write_reaches_the_host(
        engine: str, interface: str, tmp_path) -> None:
    assert GUEST is not None
    source = tmp_path / "hostdir"
    source.mkdir()
    (source / "hello.txt").write_text(HOST_TEXT + "\n")
    image = _ext4_image(source, tmp_path / "disk.ext4", "8M")
    result = run_pyvmm("run", "--engine", engine, "--kernel", str(GUEST.kernel),
                       "--initrd", str(GUEST.initramfs), "-m", "128M",
                       "--drive", f"file={image},format=raw,if={interface}",
                       "--append", f'{CMDLINE[interface]} pyvmm_run="{COMMAND}"',
                       "--timeout", "3000", timeout=3300)
    output = result.stdout + result.stderr
    assert linux_build.INIT_MARKER.encode() in output, output[-3000:]
    assert HOST_TEXT.encode() in output, output[-3000:]
    assert b"pyvmm-linux: command exited with status 0" in output, output[-3000:]
    assert result.returncode == StopKind.POWER_OFF.exit_code, output[-3000:]
    assert _read_back(image, "/from-guest.txt") == GUEST_TEXT + "\n"


@needs_guest
@needs_e2fsprogs
@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio is needed (Debian package cpio)")
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("engine", ENGINES)
def test_linux_runs_with_its_root_filesystem_on_virtio_blk(engine: str, tmp_path) -> None:
    assert GUEST is not None
    tree = tmp_path / "root"
    tree.mkdir()
    unpacked = subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
                              input=gzip.decompress(GUEST.initramfs.read_bytes()), cwd=tree,
                              capture_output=True, check=False)
    assert (tree / "init").is_file() and (tree / "bin" / "busybox").is_file(), unpacked
    image = _ext4_image(tree, tmp_path / "root.ext4", "16M")
    command = ("grep ' / ' /proc/mounts && echo " + GUEST_TEXT + " > /from-guest.txt && sync")
    result = run_pyvmm("run", "--engine", engine, "--kernel", str(GUEST.kernel), "-m", "128M",
                       "--drive", f"file={image},format=raw,if=virtio",
                       "--append", f'{CMDLINE["virtio"]} root=/dev/vda rootfstype=ext4 rw '
                                   f'init=/init pyvmm_run="{command}"',
                       "--timeout", "3000", timeout=3300)
    output = result.stdout + result.stderr
    assert linux_build.INIT_MARKER.encode() in output, output[-3000:]
    assert b"/dev/root / ext4 rw" in output, output[-3000:]
    assert b"pyvmm-linux: command exited with status 0" in output, output[-3000:]
    assert result.returncode == StopKind.POWER_OFF.exit_code, output[-3000:]
    assert _read_back(image, "/from-guest.txt") == GUEST_TEXT + "\n"

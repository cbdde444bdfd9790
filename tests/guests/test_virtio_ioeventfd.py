"""virtio off the KVM exit path (pyvmm/engines/kvm/ioeventfd.py): with KVM_IOEVENTFD a
queue notification is no VM exit, with --no-ioeventfd each one is an MMIO exit, and the
guest sees the same device either way; a moved BAR moves the registrations with it.

The guests are the polling C drivers of test_virtio_blk_guest.py: four requests (read,
write, flush, a read past the end), four notifications.
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
# --drive if= -> (C driver, the MMIO counter of its register window)
DRIVERS = {"virtio-mmio": ("blk_driver", "virtio-blk"),
           "virtio": ("blk_pci_driver", "virtio-blk-pci-bar4")}


def kvm_or_skip() -> None:
    ok, reason = engine_availability("kvm")
    if not ok:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def drivers(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("virtio_kernel")
    return {interface: build_c_kernel(KERNELS / f"{name}.c", out, ["-O1"])
            for interface, (name, _) in DRIVERS.items()}


def stats_of(stderr: str) -> dict[str, dict[str, int]]:
    """The --stats report: category -> counter -> value."""
    out: dict[str, dict[str, int]] = {}
    category = None
    for line in stderr.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            category = out.setdefault(line[:-1], {})
        elif category is not None and line.startswith("  ") and line.split()[-1].isdigit():
            name, _, value = line.strip().rpartition(" ")
            category[name.strip()] = int(value)
        else:
            category = None
    return out


def run(kernel: Path, disk: Path, interface: str, *options: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "pyvmm", "run", "--engine", "kvm", "--kernel", str(kernel),
         "--drive", f"file={disk},if={interface}", "--serial", "none", "--timeout", "300",
         "--stats", *options], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 33, done.stdout + done.stderr
    assert done.stdout.endswith(f"{DRIVERS[interface][0]}: done\n"), done.stdout
    return stats_of(done.stderr)


@pytest.mark.parametrize("irqchip", ["user", "kernel"])
@pytest.mark.parametrize("interface", list(DRIVERS))
def test_notifications_leave_the_exit_path(drivers, interface, irqchip, tmp_path):
    kvm_or_skip()
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(4096))
    window = DRIVERS[interface][1]
    fast = run(drivers[interface], disk, interface, "--irqchip", irqchip)
    slow = run(drivers[interface], disk, interface, "--irqchip", irqchip, "--no-ioeventfd")
    notified = fast["virtio"]["virtio-blk notifications"]
    assert notified == slow["virtio"]["virtio-blk notifications"] == 4
    assert fast["virtio"]["ioeventfd registered"] == 1
    assert "ioeventfd registered" not in slow["virtio"]
    # Every notification the guest made exited without ioeventfd and none did with it.
    assert slow["mmio"][window] - fast["mmio"][window] == notified
    assert slow["exits"]["mmio"] - fast["exits"]["mmio"] == notified
    assert fast["virtio-blk"] == slow["virtio-blk"]


def test_a_moved_bar_moves_the_registrations():
    kvm_or_skip()
    from pyvmm.board.virtio import VirtioSpec, pci_slot
    from pyvmm.devices.pci.config import BAR0, COMMAND, COMMAND_MEMORY
    from pyvmm.devices.virtio.pci import BAR_INDEX, LAYOUT, NOTIFY_CFG
    from pyvmm.vm import VirtualMachine

    vm = VirtualMachine(engine="kvm", virtio=(VirtioSpec("rng"),))
    try:
        pci, slot = vm.board.pci, pci_slot(0)
        offload = vm.engine._offload
        transport = vm.board.devices["virtio0"]

        def registered() -> list[int]:
            return [r.addr for r in offload._registered.get(id(transport), [])]

        assert registered() == []  # BAR 4 is not decoded yet
        notify = LAYOUT[NOTIFY_CFG][0]
        for base in (0xE0000000, 0xE1000000):
            pci.write(0, slot, 0, BAR0 + 4 * BAR_INDEX, 4, base)
            pci.write(0, slot, 0, COMMAND, 2, COMMAND_MEMORY)
            assert registered() == [base + notify]
        pci.write(0, slot, 0, COMMAND, 2, 0)  # memory decoding off: nothing listens
        assert registered() == []
        assert "ioeventfd deassign failed" not in vm.stats.counters.get("virtio", {})
        assert vm.stats.counters["virtio"]["ioeventfd registered"] == 2
    finally:
        vm.close()

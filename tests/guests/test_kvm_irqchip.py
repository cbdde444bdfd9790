"""`--irqchip kernel`: KVM's in-kernel PIC, I/O APIC, local APIC and PIT run the demo
as the board's Python ones do, without the VM exits they cost.

KVM's PIT counts host time (its hrtimer), where the board's PIT under kvm
counts the time the vCPU got: on a loaded host the demo then sees more
ticks per slice, so its tick and switch counts (and which task finishes
first) are the demo model's free parameters; everything else is exact.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, kvm_skip_reason
from tests.guests.demo_model import expected_demo_output
from tests.guests.test_apic_guest import EXPECTED as APIC_EXPECTED

needs_kvm = pytest.mark.skipif(kvm_skip_reason() is not None, reason=str(kvm_skip_reason()))


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyvmm", "run", *args], cwd=ROOT,
                          capture_output=True, timeout=300)


def _exits(stderr: bytes) -> dict[str, int]:
    text = stderr.decode()
    block = text.split("\nexits:\n", 1)[1].split("\n\n")[0] if "\nexits:\n" in text else ""
    rows = {}
    for line in block.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[-1].isdigit() and line.startswith("  "):
            rows[" ".join(parts[:-1])] = int(parts[-1])
    return rows


@needs_kvm
def test_demo_under_the_in_kernel_irqchip_and_pit_matches_the_board_s():
    user = _run("--engine", "kvm", "--irqchip", "user", "demo", "--stats")
    kernel = _run("--engine", "kvm", "--irqchip", "kernel", "--kvm-pit", "demo", "--stats")
    assert user.returncode == kernel.returncode == 33, kernel.stderr
    text = kernel.stdout.decode()
    ticks, switches = map(int, re.search(r"ticks=(\d+) switches=(\d+)", text).groups())
    b_first = text.index("task B: done") < text.index("task A: done")
    assert text == expected_demo_output(20, ticks=ticks, switches=switches,
                                        b_done_first=b_first)
    user_exits, kernel_exits = _exits(user.stderr), _exits(kernel.stderr)
    # The board's PIC injects through interrupt windows and wakes HLT in Python;
    # KVM's does both in the kernel.  (Its "intr" exits are the engine's looks,
    # after 50 ms without an exit, at whether the vCPU halted with IF=0.)
    assert user_exits.get("hlt", 0) > 0 and "hlt" not in kernel_exits, kernel.stderr
    assert "irq-window-open" not in kernel_exits
    assert kernel_exits.get("intr", 0) < user_exits["intr"], kernel.stderr
    assert kernel_exits["io"] < user_exits["io"]  # no i8259 EOIs, no PIT programming


@needs_kvm
def test_demo_under_the_in_kernel_irqchip_with_the_board_s_pit_is_the_board_s_output():
    """Without --kvm-pit the PIT is the board's, on the board's clock: the vCPU is
    kicked out of its in-kernel HLT at the PIT's deadline ("intr" exits) and the time
    it waited (halt_wait_ns) passes for the guest, so the output is --irqchip user's
    byte for byte, while the i8259 and HLT stay in KVM."""
    user = _run("--engine", "kvm", "--irqchip", "user", "demo", "--stats")
    kernel = _run("--engine", "kvm", "--irqchip", "kernel", "demo", "--stats")
    assert user.returncode == kernel.returncode == 33, kernel.stderr
    assert kernel.stdout == user.stdout == expected_demo_output(20).encode()
    user_exits, kernel_exits = _exits(user.stderr), _exits(kernel.stderr)
    assert user_exits.get("hlt", 0) > 0 and "hlt" not in kernel_exits, kernel.stderr
    assert "irq-window-open" not in kernel_exits and kernel_exits.get("intr", 0) > 0
    assert kernel_exits["io"] < user_exits["io"]  # no i8259 EOIs; the PIT's still exit
    pit_accesses = re.search(rb"\n  pit +(\d+)\n", kernel.stderr)
    assert pit_accesses and int(pit_accesses.group(1)) > 0, kernel.stderr  # the board's


# Where the snapshot is taken under kvm (hardware breakpoints, KVM_SET_GUEST_DEBUG),
# and what the saved state then shows: the LAPIC timer or the PIT mid-run.
LVT_MASKED, TIMER_MODE_SHIFT = 1 << 16, 17
PAUSE_POINTS = {
    "on_periodic": lambda s: (s["lapics"][0]["lvt"][0] >> TIMER_MODE_SHIFT == 1
                              and s["lapics"][0]["timer_running"]),
    # TSC-deadline mode, armed (or expired and not yet taken: then IRR holds 0x21)
    "kmain.deadline_wait": lambda s: (s["lapics"][0]["lvt"][0] >> TIMER_MODE_SHIFT == 2
                                      and (s["lapics"][0]["tsc_deadline"] != 0
                                           or s["lapics"][0]["irr"] >> 0x21 & 1)),
    "on_pit": lambda s: (s["devices"]["pit"]["channels"][0]["mode"] == 2
                         and s["devices"]["pit"]["channels"][0]["reload"] == 1193
                         and not s["devices"]["ioapic"]["redirection"][2] & LVT_MASKED),
    "on_com1": lambda s: not s["devices"]["ioapic"]["redirection"][4] & LVT_MASKED,
}


def _apic_lines(data: bytes) -> list[bytes]:
    return data.splitlines()


@needs_kvm
@pytest.mark.parametrize("instructions", [7_150, 7_350, 7_628, 8_300, 9_500])
def test_apic_guest_moves_from_interp_to_the_in_kernel_irqchip(tmp_path, instructions):
    """Snapshotted under interp part-way (positions as in test_apic_guest.py), resumed
    with KVM's chips: KVM_SET_IRQCHIP/PIT2/LAPIC from the board's models' state."""
    path = tmp_path / "apic.pvs"
    before = _run("--engine", "interp", "apic", "--snapshot-to", str(path),
                  "--snapshot-after-instructions", str(instructions))
    assert before.returncode == 0, before.stderr
    after = _run("--restore", str(path), "--engine", "kvm", "--irqchip", "kernel",
                 "--timeout", "60")
    assert after.returncode == 33, after.stderr
    assert _apic_lines(before.stdout + after.stdout) == [APIC_EXPECTED]


@needs_kvm
@pytest.mark.parametrize("irqchip, second", [("kernel", "jit"), ("user", "interp")])
@pytest.mark.parametrize("point", sorted(PAUSE_POINTS))
def test_apic_guest_moves_from_kvm_to_a_software_engine_mid_run(irqchip, second, point):
    """Stopped under kvm at a guest address with the timer running, snapshotted
    (KVM_GET_IRQCHIP/PIT2/LAPIC under --irqchip kernel), resumed under another
    engine: the output is that of an uninterrupted run.

    Measured on this host (kvm_pvm): KVM_GET_LAPIC reports an empty ISR while the
    guest is inside a LAPIC interrupt handler, so at on_periodic the in-service
    vector is not in the snapshot and the handler's EOI finds none (counted,
    "eoi without isr"); the counts are not affected."""
    from pyvmm.guests import guest_path
    from pyvmm.snapshot import restore_snapshot, take_snapshot
    from pyvmm.vm import ImageSpec, VirtualMachine
    from tests.guests.test_bench_guests import elf32_symbols

    address = elf32_symbols(guest_path("apic").read_bytes())[point]
    first_out, second_out = io.BytesIO(), io.BytesIO()
    vm = VirtualMachine(engine="kvm", irqchip=irqchip, serial_output=first_out)
    try:
        vm.load(ImageSpec.bundled("apic"))
        vm.engine.set_guest_debug(False, [address])
        stop = vm.run(60)
        assert stop.message == f"breakpoint at {address:#x}", stop
        vm.engine.set_guest_debug(False, [])
        snapshot = take_snapshot(vm)
    finally:
        vm.close()
    assert PAUSE_POINTS[point](snapshot.board), snapshot.board
    resumed = restore_snapshot(snapshot, second, serial_output=second_out)
    try:
        stop = resumed.run(120)
    finally:
        resumed.close()
    assert stop.guest_status == 33, stop
    assert _apic_lines(first_out.getvalue() + second_out.getvalue()) == [APIC_EXPECTED]


def test_irqchip_kernel_is_kvm_s_only():
    done = _run("--engine", "interp", "--irqchip", "kernel", "hello")
    assert done.returncode == 2 and b"--irqchip kernel is KVM's" in done.stderr


@needs_kvm
def test_a_virtio_pci_msi_x_message_reaches_kvm_s_local_apic(tmp_path):
    """With KVM's LAPICs the board's MSI target is KVM_SIGNAL_MSI: the virtio-pci
    driver guest finds its MSI-X vector in the IRR (it reads KVM's LAPIC page)."""
    from tests.guests.c_build import build_c_kernel
    from tests.guests.test_virtio_blk_guest import HOST_TEXT, KERNELS

    kernel = build_c_kernel(KERNELS / "blk_pci_driver.c", tmp_path, ["-O1"])
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(512) + HOST_TEXT.ljust(512, b"\0") + bytes(1024))
    done = _run("--engine", "kvm", "--irqchip", "kernel", "--kernel", str(kernel),
                "--drive", f"file={disk},format=raw,if=virtio", "--serial", "none",
                "--timeout", "60", "--stats")
    assert done.returncode == 33, done.stdout + done.stderr
    assert done.stdout.splitlines()[:2] == [HOST_TEXT, b"blk_pci_driver: done"]
    assert b"MSI not accepted" not in done.stderr

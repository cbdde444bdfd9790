"""`--irqchip kernel`: KVM's in-kernel PIC, I/O APIC, local APIC and PIT run the demo
as the board's Python ones do, without the VM exits they cost.

KVM's PIT counts host time (its hrtimer), where the board's PIT under kvm
counts the time the vCPU got: on a loaded host the demo then sees more
ticks per slice, so its tick and switch counts (and which task finishes
first) are the demo model's free parameters; everything else is exact.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, kvm_skip_reason
from tests.guests.demo_model import expected_demo_output

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
def test_demo_under_the_in_kernel_irqchip_matches_the_board_s():
    user = _run("--engine", "kvm", "--irqchip", "user", "demo", "--stats")
    kernel = _run("--engine", "kvm", "--irqchip", "kernel", "demo", "--stats")
    assert user.returncode == kernel.returncode == 33, kernel.stderr
    text = kernel.stdout.decode()
    ticks, switches = map(int, re.search(r"ticks=(\d+) switches=(\d+)", text).groups())
    b_first = text.index("task B: done") < text.index("task A: done")
    assert text == expected_demo_output(20, ticks=ticks, switches=switches,
                                        b_done_first=b_first)
    user_exits, kernel_exits = _exits(user.stderr), _exits(kernel.stderr)
    # The board's PIC injects through interrupt windows and wakes HLT in Python;
    # KVM's does both in the kernel.
    assert user_exits.get("hlt", 0) > 0 and "hlt" not in kernel_exits, kernel.stderr
    assert "irq-window-open" not in kernel_exits and "intr" not in kernel_exits
    assert kernel_exits["io"] < user_exits["io"]  # no i8259 EOIs, no PIT programming


@needs_kvm
def test_a_kernel_irqchip_vm_refuses_a_snapshot_with_the_reason(tmp_path):
    done = _run("--engine", "kvm", "--irqchip", "kernel", "demo", "--snapshot-to",
                str(tmp_path / "s.snap"), "--snapshot-at", "0.01")
    assert done.returncode != 0 and b"Traceback" not in done.stderr
    assert b"--irqchip user" in done.stderr


def test_irqchip_kernel_is_kvm_s_only():
    done = _run("--engine", "interp", "--irqchip", "kernel", "hello")
    assert done.returncode == 2 and b"--irqchip kernel is KVM's" in done.stderr

"""VM isolation under the hypervisor, tested rather than assumed.

Small NASM guests (guests/isolation/, built here into a temporary folder)
misbehave in one VM each -- fill all of their RAM, triple-fault, spin with
interrupts off, flood their UART -- while well-behaved guests run next to
them.  Each misbehaving VM must stop alone, for its own reason, and every
other VM must finish normally with its own, correct output and memory.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest

from pyvmm.hypervisor import OUTPUT_LIMIT_MESSAGE, Hypervisor, VmConfig
from pyvmm.machine.stop import StopKind
from pyvmm.vm import ImageSpec, VirtualMachine
from tests.conftest import ROOT, requires_kvm

pytestmark = [
    requires_kvm,
    pytest.mark.skipif(shutil.which("nasm") is None, reason="nasm is not installed"),
]

MIB = 1 << 20
SOURCES = ROOT / "guests" / "isolation"
PATTERN_A = 0x5A17F111
PATTERN_B = 0x0B0EF222
GUEST_SUCCESS = 33
# The demo's lines that depend only on its own computation (not on how many
# timer ticks a host-timed run happened to take).
def build(out: Path, name: str, *defines: str) -> Path:
    target = out / f"{name}{''.join(d.split('=')[-1] for d in defines)}.bin"
    subprocess.run(["nasm", "-Werror", "-f", "bin", "-I", f"{SOURCES}/",
                    *(f"-D{d}" for d in defines), "-o", str(target), str(SOURCES / f"{name}.asm")],
                   check=True, capture_output=True)
    return target


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, ImageSpec]:
    out = tmp_path_factory.mktemp("isolation-guests")
    paths = {
        "fill-a": build(out, "fill", f"PATTERN={PATTERN_A:#x}"),
        "fill-b": build(out, "fill", f"PATTERN={PATTERN_B:#x}"),
        "triple": build(out, "triple"),
        "spin": build(out, "spin"),
        "flood": build(out, "flood"),
    }
    return {name: ImageSpec("multiboot", path, label=name) for name, path in paths.items()}


@pytest.fixture(scope="module")
def demo_alone() -> bytes:
    """The demo's output when it runs alone (the reference for 'correct output')."""
    out = io.BytesIO()
    vm = VirtualMachine(engine="kvm", ram_size=16 * MIB, serial_output=out)
    try:
        vm.load(ImageSpec.bundled("demo", "work=3"))
        assert vm.run(60).exit_code == GUEST_SUCCESS
    finally:
        vm.close()
    return out.getvalue()


def ram(hosted) -> bytes:  # noqa: ANN001 - HostedVm
    """All of a VM's RAM below 640 KiB and above 1 MiB, as the host sees it."""
    board = hosted.board
    return (board.memory.read(0, 0x9F000)
            + board.memory.read(0x100000, board.ram_size - 0x100000))


def occurrences(memory: bytes, pattern: int) -> int:
    """How many 16-byte runs of the 32-bit `pattern` the memory holds."""
    return memory.count(pattern.to_bytes(4, "little") * 4)


def console(tmp_path: Path, name: str) -> str:
    return f"file:{tmp_path / (name + '.log')}"


def test_ram_fillers_leave_other_vms_memory_and_output_untouched(images, demo_alone, tmp_path):
    with Hypervisor() as hv:
        a = hv.add(VmConfig("fill-a", images["fill-a"], engine="kvm", ram_size=4 * MIB,
                            console=console(tmp_path, "fill-a"), timeout=60))
        b = hv.add(VmConfig("fill-b", images["fill-b"], engine="kvm", ram_size=4 * MIB,
                            console=console(tmp_path, "fill-b"), timeout=60))
        demo = hv.add(VmConfig("demo", ImageSpec.bundled("demo", "work=3"), engine="kvm",
                               ram_size=16 * MIB, console=console(tmp_path, "demo"), timeout=60))
        results = {r.name: r for r in hv.run()}

        # Each filler read its whole RAM back and found only its own pattern.
        for name in ("fill-a", "fill-b"):
            assert results[name].exit_status == GUEST_SUCCESS, results[name].reason
            assert (tmp_path / f"{name}.log").read_bytes() == b"fill: ok\n"
        # The host sees each filler's RAM full of its own pattern and none of the other's.
        ram_a, ram_b, ram_demo = ram(a), ram(b), ram(demo)
        fillable = (0x9F000 + 4 * MIB - 0x102000) // 16
        assert occurrences(ram_a, PATTERN_A) >= fillable * 0.99
        assert occurrences(ram_b, PATTERN_B) >= fillable * 0.99
        assert occurrences(ram_a, PATTERN_B) == 0
        assert occurrences(ram_b, PATTERN_A) == 0
        assert occurrences(ram_demo, PATTERN_A) == 0
        assert occurrences(ram_demo, PATTERN_B) == 0
        # The demo kernel image in the demo VM is intact (ELF load at 1 MiB).
        assert demo.board.memory.read(0x100000, 0x100) == (
            ImageSpec.bundled("demo").path.read_bytes()[0x1000:0x1100])

    demo_output = (tmp_path / "demo.log").read_bytes()
    assert results["demo"].exit_status == GUEST_SUCCESS
    # Byte for byte: other VMs loading the host do not change the demo (under
    # KVM its guest time is the time its vCPU got, ClockSource.VCPU).
    assert demo_output == demo_alone
    assert b"demo: ticks=" in demo_output


def test_misbehaving_vms_stop_alone_and_the_others_finish(images, demo_alone, tmp_path):
    flood_limit = 32 * 1024
    spin_timeout = 3.0
    with Hypervisor() as hv:
        hv.add(VmConfig("triple", images["triple"], engine="kvm", ram_size=2 * MIB,
                        console=console(tmp_path, "triple"), timeout=30))
        hv.add(VmConfig("spin", images["spin"], engine="kvm", ram_size=2 * MIB,
                        console=console(tmp_path, "spin"), timeout=spin_timeout))
        hv.add(VmConfig("flood", images["flood"], engine="kvm", ram_size=2 * MIB,
                        console=console(tmp_path, "flood"), timeout=30,
                        output_limit=flood_limit))
        hv.add(VmConfig("demo", ImageSpec.bundled("demo", "work=3"), engine="kvm",
                        ram_size=16 * MIB, console=console(tmp_path, "demo"), timeout=30))
        hv.add(VmConfig("hello", ImageSpec.bundled("hello"), engine="kvm", ram_size=2 * MIB,
                        console=console(tmp_path, "hello"), timeout=30))
        hv.add(VmConfig("interp-hello", ImageSpec.bundled("hello"), engine="interp",
                        ram_size=2 * MIB, console=console(tmp_path, "interp-hello"), timeout=30))
        results = {r.name: r for r in hv.run()}

    def log(name: str) -> bytes:
        return (tmp_path / f"{name}.log").read_bytes()

    # The triple-faulting VM: its own stop reason, its own one line.
    assert results["triple"].reason.kind is StopKind.TRIPLE_FAULT
    assert log("triple") == b"triple: faulting now\n"
    # The spinner: only its own timeout ended it.
    assert results["spin"].reason.kind is StopKind.TIMEOUT
    assert spin_timeout - 0.1 <= results["spin"].wall_seconds < spin_timeout + 5
    assert log("spin") == b"spin: spinning with interrupts off\n"
    # The flooder: stopped by its console budget, its file holds exactly the budget.
    flood = results["flood"]
    assert flood.reason.kind is StopKind.OUTPUT_LIMIT
    assert flood.reason.message == OUTPUT_LIMIT_MESSAGE.format(flood_limit)
    assert flood.console_bytes == flood_limit and flood.console_dropped > 0
    flood_text = log("flood")
    assert len(flood_text) == flood_limit
    assert set(flood_text) == {ord("x"), 10}
    # Everyone else finished normally, with the output they have alone, and
    # well before the spinner's time limit: nobody waited behind a stuck VM.
    assert results["demo"].exit_status == GUEST_SUCCESS
    assert log("demo") == demo_alone
    assert results["demo"].timer_interrupts >= 3
    assert results["demo"].host_wakeups >= 1
    for name in ("hello", "interp-hello"):
        assert results[name].exit_status == GUEST_SUCCESS, results[name].reason
        assert log(name) == b"Hello from a pyvmm boot sector!\r\n"
    for name in ("demo", "hello", "interp-hello"):
        assert results[name].wall_seconds < spin_timeout


# -- a huge HC_NET_WAIT next to a normal VM -----------------------------------------
LIB = ROOT / "guests" / "lib"
LIB_OBJS = ("boot32", "gdt", "idt", "paging", "pic", "pit", "uart", "fmt", "klog",
            "cmdline", "pv")
NETWAIT = """
%include "x86.inc"
%include "pv.inc"
%include "debugexit.inc"
        extern uart_puts, pv_detect
        global kmain, guest_name
        section .rodata
guest_name: db "netwait", 0
msg_einval: db "netwait: 2^64-1 ns refused", 10, 0
msg_armed: db "netwait: 1 h wait armed, halting", 10, 0
msg_bad: db "netwait: unexpected result", 10, 0
        section .text
        bits 64
        default rel
kmain:
        call pv_detect
        mov rbx, -1                     ; a timeout of 2^64-1 ns (584 years)
        PV_CALL HC_NET_WAIT
        cmp rax, -22                    ; -EINVAL
        jne .bad
        lea rdi, [msg_einval]
        call uart_puts
        mov rbx, 3600000000000          ; the longest allowed: 1 h, armed
        PV_CALL HC_NET_WAIT
        cmp rax, -11                    ; -EAGAIN
        jne .bad
        lea rdi, [msg_armed]
        call uart_puts
        sti
.idle:  hlt
        jmp .idle
.bad:   lea rdi, [msg_bad]
        call uart_puts
        DEBUG_EXIT EXIT_FAILURE_VALUE
"""


def build_lib_kernel(out: Path, name: str, source: str) -> Path:
    """A 64-bit kernel on the bundled guests' library (guests/Makefile's recipe)."""
    (out / f"{name}.asm").write_text(source)
    objects = []
    for unit, path in [(lib, LIB / f"{lib}.asm") for lib in LIB_OBJS] + [
            (name, out / f"{name}.asm")]:
        objects.append(out / f"{unit}.o")
        subprocess.run(["nasm", "-Werror", "-I", f"{LIB}/", "-f", "elf32", "-o",
                        str(objects[-1]), str(path)], check=True, capture_output=True)
    image = out / f"{name}.elf"
    subprocess.run(["ld", "-m", "elf_i386", "--build-id=none", "--no-warn-rwx-segments",
                    "-nostdlib", "-T", str(ROOT / "guests" / "kernel.ld"), "-o", str(image),
                    *map(str, objects)], check=True, capture_output=True)
    return image


def test_a_huge_net_wait_is_refused_and_its_neighbour_finishes(demo_alone, tmp_path):
    """HC_NET_WAIT with 2**64-1 ns once crashed the shared host-timer thread
    (OverflowError) and with it every VM.  Now the call is -EINVAL, the
    longest legal wait is armed without harm, and the waiting VM stops by its
    own timeout while the demo next to it finishes normally."""
    from pyvmm.paravirt import VirtualSwitch

    image = ImageSpec("multiboot", build_lib_kernel(tmp_path, "netwait", NETWAIT),
                      label="netwait")
    with Hypervisor(switch=VirtualSwitch()) as hv:
        hv.add(VmConfig("netwait", image, engine="kvm", ram_size=16 * MIB,
                        console=console(tmp_path, "netwait"), timeout=3))
        hv.add(VmConfig("demo", ImageSpec.bundled("demo", "work=3"), engine="kvm",
                        ram_size=16 * MIB, console=console(tmp_path, "demo"), timeout=30))
        results = {r.name: r for r in hv.run()}
        assert hv.host_timer.running
    log = (tmp_path / "netwait.log").read_bytes()
    assert log == b"netwait: 2^64-1 ns refused\nnetwait: 1 h wait armed, halting\n", log
    assert results["netwait"].reason.kind is StopKind.TIMEOUT, results["netwait"].reason
    assert results["demo"].exit_status == GUEST_SUCCESS, results["demo"].reason
    assert (tmp_path / "demo.log").read_bytes() == demo_alone

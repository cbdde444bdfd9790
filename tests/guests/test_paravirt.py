"""Para-virtualization end to end: the hypercall ABI under each engine, the
demo's `pv` mode against its emulated-device run, and the `ping` guest's two
VMs talking through the virtual switch (docs/PARAVIRT.md)."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from pyvmm.machine.stop import StopKind, StopReason
from pyvmm.paravirt import VirtualSwitch, abi, connect_board
from pyvmm.vm import ImageSpec, VirtualMachine, engine_availability
from tests.conftest import requires_kvm, run_pyvmm

GUEST_SUCCESS = 33
GUEST_FAILURE = 35


def _interp_skip_reason() -> str | None:
    ok, reason = engine_availability("interp")
    return None if ok else reason


requires_interp = pytest.mark.skipif(_interp_skip_reason() is not None,
                                     reason=str(_interp_skip_reason()))
ENGINES = [pytest.param("kvm", marks=requires_kvm),
           pytest.param("interp", marks=requires_interp)]


def make_vm(engine: str, out: io.BytesIO, name: str = "vm0") -> VirtualMachine:
    """A VM as the engine builds it: the engine itself must publish its
    registers (`board.cpu_access`), or the hypercalls are ignored."""
    return VirtualMachine(engine, serial_output=out, name=name)


# -- the ABI, from a real-mode boot sector ----------------------------------------

ABI_PROBE = f"""
bits 16
org 0x7c00
        xor ax, ax
        mov ds, ax
        mov dx, {abi.HYPERCALL_PORT}
        mov eax, {abi.HC_PROBE}
        mov ebx, 0xdeadbeef
        out dx, eax
        mov [0x500], eax        ; version
        mov [0x504], ebx        ; VM id
        mov [0x508], ecx        ; features
        inc word [0x510]        ; runs once: the OUT completed exactly once
        mov eax, {abi.HC_CONSOLE_WRITE}
        mov ebx, msg
        mov ecx, msg_len
        out dx, eax
        mov [0x520], eax
        mov eax, {abi.HC_CONSOLE_WRITE}
        mov ebx, 0x7ffffff0     ; beyond the VM's 64 MiB of RAM
        mov ecx, 4
        out dx, eax
        mov [0x524], eax
        mov eax, 99             ; no such call
        out dx, eax
        mov [0x528], eax
        mov al, 0x10
        out 0xf4, al
        cli
        hlt
msg: db "pv console ok", 13, 10
msg_len equ $ - msg
times 510-($-$$) db 0
dw 0xaa55
"""


@pytest.fixture(scope="module")
def abi_probe_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("nasm") is None:
        pytest.skip("nasm is not installed")
    tmp = tmp_path_factory.mktemp("abi")
    (tmp / "probe.asm").write_text(ABI_PROBE)
    subprocess.run(["nasm", "-f", "bin", "-o", str(tmp / "probe.bin"), str(tmp / "probe.asm")],
                   check=True, capture_output=True)
    return tmp / "probe.bin"


@pytest.mark.parametrize("engine", ENGINES)
def test_hypercall_abi_is_the_same_under_every_engine(engine: str, abi_probe_image: Path):
    out = io.BytesIO()
    vm = make_vm(engine, out)
    try:
        vm.load(ImageSpec("boot-sector", abi_probe_image))
        reason = vm.run(30)
        assert reason.exit_code == GUEST_SUCCESS, reason.describe()
        mem = vm.board.memory
        assert mem.read_u32(0x500) == abi.ABI_VERSION
        assert mem.read_u32(0x504) == 0  # VM id of a lone VM
        assert mem.read_u32(0x508) == abi.FEATURE_TIMER | abi.FEATURE_CONSOLE
        assert mem.read_u16(0x510) == 1
        assert mem.read_u32(0x520) == 15
        assert mem.read_u32(0x524) == (-abi.EFAULT) & 0xFFFFFFFF
        assert mem.read_u32(0x528) == (-abi.ENOSYS) & 0xFFFFFFFF
        assert out.getvalue() == b"pv console ok\r\n"
        assert vm.stats.get("hypercalls", "console-write") == 2
    finally:
        vm.close()


# -- demo: pv mode versus emulated devices ----------------------------------------

EXITS = re.compile(rb"^exits: (\d+)\s*$", re.M)
SUMMARY = re.compile(rb"^demo: ticks=\d+ switches=\d+ (.*)$", re.M)


def _normalised(output: bytes, timer_line: bytes) -> list[bytes]:
    """Lines with the timer line named and the timing-dependent counts masked
    (guests/README.md: a host stall may add a tick and reorder the two `done` lines)."""
    lines = output.replace(b"\r\n", b"\n").split(b"\n")
    assert timer_line in lines, output
    lines = [b"<timer>" if line == timer_line else line for line in lines]
    return sorted(SUMMARY.sub(rb"demo: ticks=* switches=* \1", line) for line in lines)


@requires_kvm
def test_demo_pv_mode_prints_the_same_with_far_fewer_exits():
    emulated = run_pyvmm("run", "--engine", "kvm", "--stats", "--append", "work=10", "demo")
    pv = run_pyvmm("run", "--engine", "kvm", "--stats", "--append", "work=10 pv", "demo")
    assert emulated.returncode == GUEST_SUCCESS, emulated.stderr
    assert pv.returncode == GUEST_SUCCESS, pv.stderr
    assert _normalised(emulated.stdout, b"demo: pit 100 Hz") == \
        _normalised(pv.stdout, b"demo: pv timer 100 Hz")
    emulated_exits = int(EXITS.findall(emulated.stderr)[-1])
    pv_exits = int(EXITS.findall(pv.stderr)[-1])
    assert pv_exits * 3 < emulated_exits, (pv_exits, emulated_exits)
    assert b"hypercall" in pv.stderr and b"hypercall" not in emulated.stderr


@requires_interp
def test_demo_pv_mode_under_the_interpreter_is_byte_identical_but_the_timer_line():
    """The interpreter's clock is virtual, so both runs are exactly reproducible."""
    outputs = {}
    for cmdline in ("work=5", "work=5 pv"):
        out = io.BytesIO()
        vm = make_vm("interp", out)
        try:
            vm.load(ImageSpec.bundled("demo", cmdline))
            assert vm.run(120).exit_code == GUEST_SUCCESS
            outputs[cmdline] = (out.getvalue(), vm.stats.get("hypercalls", "timer-start"))
        finally:
            vm.close()
    emulated, pv = outputs["work=5"], outputs["work=5 pv"]
    assert pv[0] == emulated[0].replace(b"demo: pit 100 Hz", b"demo: pv timer 100 Hz")
    assert (emulated[1], pv[1]) == (0, 1)


@requires_interp
def test_cli_interp_demo_pv_uses_the_pv_timer_and_counts_hypercalls():
    """The user's way in: the interpreter must publish its registers to the
    hypercall device itself (nothing in the CLI path patches it in)."""
    result = run_pyvmm("run", "--engine", "interp", "--stats", "--append", "work=2 pv", "demo")
    assert result.returncode == GUEST_SUCCESS, result.stderr
    assert b"demo: pv timer 100 Hz\r\n" in result.stdout, result.stdout
    stats = result.stderr.decode()
    lines = stats.split("hypercalls:\n", 1)[1].splitlines()
    section = "\n".join(line for line in lines[:next(
        (i for i, line in enumerate(lines) if not line.startswith("  ")), len(lines))])
    counts = dict(re.findall(r"^  (\S[\w -]*?)\s+(\d+)$", section, re.M))
    assert counts.get("probe") == "1" and counts.get("timer-start") == "1", section
    assert int(counts.get("console-write", "0")) > 10, section
    assert "no register access" not in stats


# -- ping: two VMs, one switch ------------------------------------------------------

def run_pair(engine: str, count: int, switch: VirtualSwitch | None = None,
             timeout: float = 60, stop_peer_on_failure: bool = False
             ) -> list[tuple[int, bytes]]:
    """Two VMs running `ping` on one switch, each in its own thread."""
    switch = switch if switch is not None else VirtualSwitch()
    vms, outs = [], []
    try:
        for vm_id in (1, 2):
            out = io.BytesIO()
            vm = make_vm(engine, out, f"vm{vm_id}")
            vms.append(vm)
            outs.append(out)
            connect_board(vm.board, switch, vm_id)
            vm.load(ImageSpec.bundled("ping", f"count={count}"))
        reasons: dict[int, object] = {}

        def run(i: int) -> None:
            reasons[i] = vms[i].run(timeout)
            if stop_peer_on_failure and reasons[i].exit_code == GUEST_FAILURE:
                peer = vms[1 - i].board  # its vCPU thread applies the stop
                peer.events.post(lambda: peer.request_stop(StopReason(StopKind.PAUSED)))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return [(reasons[i].exit_code, outs[i].getvalue()) for i in range(2)]  # type: ignore[attr-defined]
    finally:
        for vm in vms:
            vm.close()


def expected_ping(me: int, peer: int, count: int) -> bytes:
    return (f"ping: vm {me}, peer vm {peer}, {count} datagrams each way\r\n"
            f"ping: sent {count}, received {count}, all payloads ok\r\n").encode()


@pytest.mark.parametrize("engine", ENGINES)
def test_ping_two_vms_exchange_and_check_datagrams(engine: str):
    switch = VirtualSwitch()
    results = run_pair(engine, 40, switch)
    assert results == [(GUEST_SUCCESS, expected_ping(1, 2, 40)),
                       (GUEST_SUCCESS, expected_ping(2, 1, 40))]
    for vm_id in (1, 2):
        counters = switch.counters(vm_id)
        assert (counters.sent, counters.received, counters.dropped) == (40, 40, 0)


@pytest.mark.parametrize("engine", ENGINES)
def test_ping_notices_a_corrupted_payload(engine: str):
    class TamperingSwitch(VirtualSwitch):
        """Flips one byte of VM 1's datagram number 3."""

        def send(self, source, destination, payload):
            if source == 1 and payload[5] == 3:
                payload = payload[:-1] + bytes([payload[-1] ^ 0xFF])
            return super().send(source, destination, payload)

    results = run_pair(engine, 8, TamperingSwitch(), timeout=30, stop_peer_on_failure=True)
    status, output = results[1]
    assert status == GUEST_FAILURE
    assert output.endswith(b"ping: bad datagram 3\r\n")
    assert results[0][0] == StopKind.PAUSED.exit_code  # VM 1 waited for datagram 4


@requires_kvm
def test_ping_through_the_hypervisor_cli():
    result = run_pyvmm("run", "--vms", "2", "--append", "count=25", "ping")
    assert result.returncode == 0 or result.returncode == GUEST_SUCCESS, result.stderr
    for me, peer in ((1, 2), (2, 1)):
        for line in expected_ping(me, peer, 25).splitlines(keepends=True):
            assert f"[vm{me}] ".encode() + line.rstrip(b"\r\n") in result.stdout, result.stdout


def test_ping_without_a_switch_says_why_and_fails():
    """A lone VM has no FEATURE_NET: the guest refuses instead of hanging."""
    engine = "kvm" if engine_availability("kvm")[0] else "interp"
    if not engine_availability(engine)[0]:
        pytest.skip("neither kvm nor interp is available")
    out = io.BytesIO()
    vm = make_vm(engine, out)
    try:
        vm.load(ImageSpec.bundled("ping"))
        assert vm.run(60).exit_code == GUEST_FAILURE
        assert out.getvalue() == b"ping: needs pyvmm's hypercalls and a virtual switch\r\n"
    finally:
        vm.close()


@requires_interp
def test_ping_under_the_hypervisors_time_sliced_interpreter():
    """Interpreter VMs share one scheduler thread: a VM waiting in HLT must
    give the peer its turn, and the peer's datagram must wake it."""
    from pyvmm.hypervisor import Hypervisor, VmConfig

    out = io.BytesIO()
    with Hypervisor(switch=VirtualSwitch(), stdout=out) as hypervisor:
        for vm_id in (1, 2):
            hypervisor.add(VmConfig(name=f"vm{vm_id}", engine="interp", timeout=60,
                                    image=ImageSpec.bundled("ping", "count=10")))
        results = hypervisor.run()
    assert [r.exit_status for r in results] == [GUEST_SUCCESS, GUEST_SUCCESS]
    for me, peer in ((1, 2), (2, 1)):
        for line in expected_ping(me, peer, 10).splitlines():
            assert f"[vm{me}] ".encode() + line in out.getvalue().splitlines()


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                    reason="qemu-system-x86_64 is not installed")
def test_demo_pv_falls_back_to_pit_and_uart_on_qemu():
    """No pyvmm signature in CPUID on QEMU: `pv` must change nothing."""
    outputs = []
    for cmdline in ("work=3", "work=3 pv"):
        result = subprocess.run(
            ["qemu-system-x86_64", "-kernel", str(ImageSpec.bundled("demo").path),
             "-append", cmdline, "-serial", "stdio", "-display", "none", "-no-reboot",
             "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"],
            capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
        assert result.returncode == GUEST_SUCCESS, result.stderr
        outputs.append(result.stdout)
    assert b"demo: pit 100 Hz" in outputs[1]
    assert _normalised(outputs[0], b"demo: pit 100 Hz") == \
        _normalised(outputs[1], b"demo: pit 100 Hz")

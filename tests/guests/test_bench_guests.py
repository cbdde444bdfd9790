"""The benchmark guests (guests/bench/) execute exactly the instructions they claim.

Each bench guest prints `bench-X: n=N instructions=I ...`, where I is K * n + C
counted by hand from its source.  The interpreter checks that claim two ways:

- by single-stepping the guest and counting the instructions from the first
  execution of the ELF symbol `measure_start` to the last execution of
  `measure_end` (the measured part's first and last instruction), which must
  equal I exactly, for n = 0 (C alone) and a small n (K too);
- by Stats.instructions: two whole runs with n1 and n2 differ by exactly
  I(n2) - I(n1) = K * (n2 - n1) instructions.

The guests' checksums are recomputed here in Python, and where /dev/kvm is
present the kvm engine must print the same bytes as the interpreter.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess

import pytest

from pyvmm.console import OutputCapture
from pyvmm.engines.registry import engine_availability
from pyvmm.guests import EXIT_SUCCESS_STATUS, guest_path
from pyvmm.vm import ImageSpec, VirtualMachine

BENCHES = ("int", "mem", "sys", "io", "kloop")
MASK64 = (1 << 64) - 1
RESULT = re.compile(rb"^(bench-\w+): n=(\d+) instructions=(\d+) reps=(\d+)(.*)\r\n", re.M)

interp_ok, interp_reason = engine_availability("interp")
needs_interp = pytest.mark.skipif(not interp_ok, reason=f"interp engine: {interp_reason}")
needs_kvm = pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="no /dev/kvm on this host")




def elf32_symbols(image: bytes) -> dict[str, int]:
    """Name -> value of an ELF32 image's .symtab (System V gABI, "Symbol Table")."""
    shoff, = struct.unpack_from("<I", image, 32)
    shentsize, shnum = struct.unpack_from("<HH", image, 46)
    sections = [struct.unpack_from("<IIIIIIIIII", image, shoff + i * shentsize)
                for i in range(shnum)]
    symbols = {}
    for _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if kind != 2:  # SHT_SYMTAB
            continue
        strtab_offset = sections[link][4]
        for pos in range(offset, offset + size, entsize):
            name_index, value = struct.unpack_from("<II", image, pos)
            end = image.index(b"\0", strtab_offset + name_index)
            symbols[image[strtab_offset + name_index:end].decode()] = value
    return symbols


def parse_result(output: bytes) -> dict:
    match = RESULT.search(output)
    assert match, f"no result line in {output!r}"
    fields = dict(re.findall(rb" (\w+)=(\w+)", match.group(5)))
    return {"name": match.group(1).decode(), "n": int(match.group(2)),
            "instructions": int(match.group(3)), "reps": int(match.group(4)),
            **{k.decode(): v.decode() for k, v in fields.items()}}


def run(engine: str, bench: str, cmdline: str) -> tuple[bytes, int | None, int | None]:
    """(console output, exit status, Stats.instructions) of one whole run."""
    capture = OutputCapture()
    vm = VirtualMachine(engine=engine, serial_output=capture, debugcon_output=capture)
    try:
        vm.load(ImageSpec.bundled(f"bench-{bench}", cmdline))
        stop = vm.run(60)
        return bytes(capture.data), stop.exit_code, vm.stats.instructions
    finally:
        vm.close()


def traced_count(bench: str, cmdline: str) -> tuple[int, bytes]:
    """Single-step the guest under interp; count measure_start .. measure_end."""
    symbols = elf32_symbols(guest_path(f"bench-{bench}").read_bytes())
    start, end = symbols["measure_start"], symbols["measure_end"]
    capture = OutputCapture()
    vm = VirtualMachine(engine="interp", serial_output=capture, debugcon_output=capture)
    try:
        vm.load(ImageSpec.bundled(f"bench-{bench}", cmdline))
        engine, cpu = vm.engine, vm.engine.cpu
        first = last = None
        for index in range(200_000):
            if vm.board.stop_request is not None:
                break
            if cpu.rip == start and first is None:
                first = index
            if cpu.rip == end:
                last = index
            assert engine.step() is None, "the guest stopped unexpectedly"
        else:
            pytest.fail("the guest did not exit within 200000 instructions")
        assert first is not None and last is not None
        return last - first + 1, bytes(capture.data)
    finally:
        vm.close()


@needs_interp
@pytest.mark.parametrize("n", [0, 3])
@pytest.mark.parametrize("bench", BENCHES)
def test_claimed_count_equals_single_stepped_count(bench: str, n: int) -> None:
    counted, output = traced_count(bench, f"n={n} pages=8")
    result = parse_result(output)
    assert result["name"] == f"bench-{bench}" and result["n"] == n and result["reps"] == 1
    assert result["instructions"] == counted


@needs_interp
@pytest.mark.parametrize("bench", BENCHES)
def test_stats_difference_is_k_times_n_difference(bench: str) -> None:
    # n1 and n2 are chosen so that every number printed has as many digits in
    # both runs: then printing costs the same and only the loop differs.
    n1, n2 = 300, 400
    out1, status1, total1 = run("interp", bench, f"n={n1} pages=8")
    out2, status2, total2 = run("interp", bench, f"n={n2} pages=8")
    assert status1 == status2 == EXIT_SUCCESS_STATUS
    claimed1, claimed2 = parse_result(out1)["instructions"], parse_result(out2)["instructions"]
    assert len(str(claimed1)) == len(str(claimed2))
    k = (claimed2 - claimed1) // (n2 - n1)
    assert claimed2 - claimed1 == k * (n2 - n1) and k > 0
    assert total2 - total1 == claimed2 - claimed1


@needs_interp
def test_reps_multiplies_the_count() -> None:
    once = parse_result(run("interp", "int", "n=7")[0])
    thrice = parse_result(run("interp", "int", "n=7 reps=3")[0])
    assert thrice["reps"] == 3 and thrice["instructions"] == 3 * once["instructions"]


def int_checksum(n: int) -> int:
    """bench-int's loop in Python (guests/bench/int.asm)."""
    x, acc = 0x0123456789ABCDEF, 0
    for _ in range(n):
        x ^= x >> 12
        x ^= (x << 25) & MASK64
        x ^= x >> 27
        if x & 1:
            acc = (acc + x) & MASK64
        else:
            acc ^= x
            acc = ((acc << 5) | (acc >> 59)) & MASK64
    return acc  # one rep: checksum = rol(0, 7) ^ result


def mem_checksum(n: int, pages: int) -> int:
    """bench-mem's pointer chase in Python (guests/bench/mem.asm)."""
    def node(i: int) -> int:
        return 0x80000000 + i * 4096 + (i * 64) % 4096

    index, acc = 0, 0
    for _ in range(n):
        index = (index * 0x5851F42D + 0x14057B7F) % pages
        acc = (acc + node(index)) & MASK64
    return acc


def sys_checksum(n: int) -> int:
    """bench-sys: task i's result is i + n + (n - 1) + ... + 1; A ^ rol(B, 32)."""
    a, b = 0 + n * (n + 1) // 2, 1 + n * (n + 1) // 2
    return a ^ (((b << 32) | (b >> 32)) & MASK64)


def kloop_checksum(n: int, reps: int = 1) -> int:
    """bench-kloop's loop in Python (guests/bench/kloop.asm): xorshift32, table, imul."""
    mask = (1 << 32) - 1
    table = [(i * 0x9E3779B1 + 1) & mask for i in range(256)]
    checksum = 0
    for _ in range(reps):
        x, acc = 0x2545F491, 0
        for _ in range(n):
            x ^= (x << 13) & mask
            x ^= x >> 17
            x ^= (x << 5) & mask
            value = (table[x & 0xFF] * x) & mask
            table[x & 0xFF] = value
            acc = (acc + value) & mask if value & (1 << 16) else acc ^ value
        checksum = (((checksum << 7) | (checksum >> 25)) & mask) ^ acc
    return checksum


@needs_interp
@pytest.mark.parametrize(("bench", "cmdline", "expected"), [
    ("int", "n=500", int_checksum(500)),
    ("mem", "n=300 pages=16", mem_checksum(300, 16)),
    ("sys", "n=20", sys_checksum(20)),
    ("kloop", "n=700 reps=2", kloop_checksum(700, 2)),
])
def test_checksums_match_python(bench: str, cmdline: str, expected: int) -> None:
    output, status, _ = run("interp", bench, cmdline)
    assert status == EXIT_SUCCESS_STATUS
    assert int(parse_result(output)["checksum"], 16) == expected


def test_mem_walk_visits_every_page_before_repeating() -> None:
    """The successor map is one full cycle (Hull-Dobell), for every power of two."""
    for pages in (1, 2, 8, 64, 8192):
        seen, index = set(), 0
        for _ in range(pages):
            seen.add(index)
            index = (index * 0x5851F42D + 0x14057B7F) % pages
        assert index == 0 and len(seen) == pages


@needs_interp
@needs_kvm
@pytest.mark.parametrize("bench", BENCHES)
def test_kvm_prints_what_interp_prints(bench: str) -> None:
    available, reason = engine_availability("kvm")
    if not available:
        pytest.skip(f"kvm engine: {reason}")
    if bench == "kloop":
        # Measured 2026-12-07: under this nested KVM host both pyvmm's kvm engine
        # and QEMU -accel kvm triple-fault on the first instruction fetched after
        # CR0.PG is set with 32-bit (non-PAE) paging; QEMU TCG and interp run it.
        pytest.skip("this nested KVM host triple-faults on 32-bit non-PAE paging "
                    "(QEMU -accel kvm too)")
    cmdline = "n=50 pages=32"
    assert run("kvm", bench, cmdline)[:2] == run("interp", bench, cmdline)[:2]


@needs_interp
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                    reason="qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")
@pytest.mark.parametrize("bench", BENCHES)
def test_qemu_tcg_prints_what_interp_prints(bench: str) -> None:
    """A third-party emulator agrees with ours on the result line and exit status."""
    cmdline = "n=50 pages=32"
    done = subprocess.run(
        ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "qemu64", "-m", "64",
         "-kernel", str(guest_path(f"bench-{bench}")), "-append", cmdline,
         "-serial", "stdio", "-display", "none", "-device",
         "isa-debug-exit,iobase=0xf4,iosize=0x04", "-no-reboot"],
        capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    output, status, _ = run("interp", bench, cmdline)
    assert (done.stdout, done.returncode) == (output, status)

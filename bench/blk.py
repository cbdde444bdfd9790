"""The `blk` benchmark: virtio-blk from inside a guest, pyvmm beside QEMU.

    python -m bench.blk [--runners kvm,kvm:no-ioeventfd,jit,qemu-tcg,qemu-kvm]
                        [--seq-requests N] [--rand-requests N] [--json FILE] [--doc FILE]

The guest is tests/guests/virtio_kernel/blk_bench.c, a polling virtio-pci
driver (one request in flight, no interrupts) built here with gcc: `seq`
reads 64 KiB extents in order, `rand` 4 KiB extents at pseudo-random
4 KiB-aligned places of a 32 MiB raw image of random bytes.  Every runner
boots the same ELF with 64 MiB of RAM and the same image:
- pyvmm: `pyvmm run --engine E --kernel blk_bench.elf --drive file=IMG,if=virtio`
  (kvm:no-ioeventfd adds --no-ioeventfd), with --stats for the VM exits;
- QEMU: `qemu-system-x86_64 -accel tcg|kvm -kernel blk_bench.elf -drive
  file=IMG,if=none,id=d0,format=raw -device virtio-blk-pci,drive=d0,
  disable-legacy=on` (the same modern device; SeaBIOS runs first there).
Each (workload, runner) runs with N requests and twice with 0, and the
difference of the wall times (against the faster run with 0) is the time of
the N requests (process start, firmware and device set-up cancel out): MB/s
for `seq`, IOPS for `rand`, and under kvm the VM exits per request.  One
run each, all in one session: the ratios are what to quote on this shared
machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.results import replace_marked
from bench.runners import QEMU, child_unavailable, runner_list

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "guests" / "virtio_kernel" / "blk_bench.c"
LINKER_SCRIPT = ROOT / "tests" / "guests" / "c_kernel" / "kernel.ld"
RAM_MIB = 64
DISK_SECTORS = 65536  # 32 MiB
RUNNERS = ("kvm", "kvm:no-ioeventfd", "kvm:user", "jit", "qemu-tcg", "qemu-kvm")
# workload -> (bytes per request, sequential?)
WORKLOADS = {"seq": (65536, True), "rand": (4096, False)}
EXITS_LINE = re.compile(rb"^exits: (\d+)$", re.MULTILINE)
DOC_BEGIN = "<!-- blk:begin -->"
DOC_END = "<!-- blk:end -->"


@dataclass
class BlkResult:
    workload: str
    runner: str
    requests: int
    seconds: float | None  # wall(N) - wall(0)
    per_second: float | None  # IOPS (rand) or MB/s (seq)
    exits_per_request: float | None
    note: str = ""


def build(out: Path, requests: int, size: int, sequential: bool) -> Path:
    stem = f"blk_bench_{size}_{int(sequential)}_{requests}"
    obj, elf = out / f"{stem}.o", out / f"{stem}.elf"
    subprocess.run(["gcc", "-m32", "-ffreestanding", "-fno-pic", "-fno-stack-protector",
                    "-nostdlib", "-O1", f"-DREQUESTS={requests}", f"-DDATA_SIZE={size}",
                    f"-DDISK_SECTORS={DISK_SECTORS}u", f"-DSEQUENTIAL={int(sequential)}",
                    "-c", str(SOURCE), "-o", str(obj)], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-T", str(LINKER_SCRIPT), "--build-id=none",
                    "--no-warn-rwx-segments", "-o", str(elf), str(obj)], check=True)
    return elf


def command(runner: str, kernel: Path, disk: Path) -> list[str] | str:
    """The child's command line, or why the runner cannot run here."""
    unavailable = child_unavailable(runner)
    if unavailable is not None:
        return unavailable
    if runner.startswith("qemu-"):
        accel = runner.split("-", 1)[1]
        return [QEMU, "-accel", accel, "-m", str(RAM_MIB), "-kernel", str(kernel),
                "-nodefaults", "-display", "none", "-monitor", "none", "-serial", "none",
                "-debugcon", "stdio", "-drive", f"file={disk},if=none,id=d0,format=raw",
                "-device", "virtio-blk-pci,drive=d0,disable-legacy=on",
                "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-no-reboot"]
    engine, _, option = runner.partition(":")
    extra = {"": [], "no-ioeventfd": ["--no-ioeventfd"], "user": ["--irqchip", "user"]}
    return [sys.executable, "-m", "pyvmm", "run", "--engine", engine, *extra[option],
            "--kernel", str(kernel), "-m", f"{RAM_MIB}M", "--drive", f"file={disk},if=virtio",
            "--serial", "none", "--stats", "--timeout", "3000"]


def run_once(argv: list[str], timeout: float) -> tuple[float, int | None, str]:
    """(wall seconds, VM exits or None, problem or "")."""
    started = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, cwd=ROOT,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - started, None, f"timed out after {timeout:g} s"
    seconds = time.perf_counter() - started
    if done.returncode != 33 or b"blk_bench: " not in done.stdout:
        tail = (done.stdout + done.stderr).decode("latin-1").strip().splitlines()
        return seconds, None, f"exit {done.returncode}: {tail[-1] if tail else ''}"
    exits = EXITS_LINE.search(done.stderr)
    return seconds, int(exits.group(1)) if exits else None, ""


def measure(workload: str, runner: str, requests: int, out: Path, disk: Path,
            timeout: float) -> BlkResult:
    size, sequential = WORKLOADS[workload]
    full, empty = (build(out, n, size, sequential) for n in (requests, 0))
    argv_full, argv_empty = command(runner, full, disk), command(runner, empty, disk)
    if isinstance(argv_full, str):
        return BlkResult(workload, runner, requests, None, None, None, f"skipped: {argv_full}")
    base, base_exits = float("inf"), None
    for _ in range(2):  # the fixed cost: the faster of two runs with no request
        seconds, exits, problem = run_once(argv_empty, timeout)
        if problem:
            return BlkResult(workload, runner, requests, None, None, None, f"n=0: {problem}")
        if seconds < base:
            base, base_exits = seconds, exits
    wall, exits, problem = run_once(argv_full, timeout)
    if problem:
        return BlkResult(workload, runner, requests, None, None, None, problem)
    seconds = wall - base
    if seconds <= 0:
        return BlkResult(workload, runner, requests, None, None, None,
                         f"N requests took no longer than none ({wall:.2f} s vs {base:.2f} s)")
    rate = requests * size / seconds / 1e6 if sequential else requests / seconds
    per_request = None if exits is None or base_exits is None or \
        not runner.startswith("kvm") else (exits - base_exits) / requests
    return BlkResult(workload, runner, requests, seconds, rate, per_request)


def format_markdown(results: list[BlkResult]) -> str:
    lines = [DOC_BEGIN, "",
             "`python -m bench.blk` (bench/blk.py), one run: the guest "
             "tests/guests/virtio_kernel/blk_bench.c (polling virtio-pci, one request in "
             f"flight), a {DISK_SECTORS * 512 >> 20} MiB raw image, {RAM_MIB} MiB RAM. "
             "seq: 64 KiB reads in order (MB/s); rand: 4 KiB reads at random 4 KiB-aligned "
             "places (IOPS). Time = wall(N requests) - wall(0 requests), the faster of two "
             "runs with 0.", "",
             "| workload | runner | requests | seconds | MB/s or IOPS | vs qemu-kvm | vs qemu-tcg "
             "| VM exits per request | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    reference = {(r.workload, r.runner): r.per_second for r in results}
    for r in results:
        rate = f"{r.per_second:.1f}" if r.per_second is not None else "-"
        ratios = []
        for ref in ("qemu-kvm", "qemu-tcg"):
            other = reference.get((r.workload, ref))
            ratios.append(f"{r.per_second / other:.3f}" if other and r.per_second else "-")
        seconds = f"{r.seconds:.2f}" if r.seconds is not None else "-"
        exits = f"{r.exits_per_request:.2f}" if r.exits_per_request is not None else "-"
        lines.append(f"| {r.workload} | {r.runner} | {r.requests} | {seconds} | {rate} | "
                     f"{ratios[0]} | {ratios[1]} | {exits} | {r.note} |")
    lines += ["", DOC_END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.blk", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runners", default=",".join(RUNNERS),
                        help=f"comma-separated runners (default: {','.join(RUNNERS)})")
    parser.add_argument("--seq-requests", type=int, default=3000, metavar="N")
    parser.add_argument("--rand-requests", type=int, default=15000, metavar="N")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="per-run limit in seconds (default: 1800)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--doc", type=Path, help="rewrite the blk table in this file")
    args = parser.parse_args(argv)
    runners = runner_list(parser, args.runners, RUNNERS)
    if shutil.which("gcc") is None or shutil.which("ld") is None:
        parser.error("gcc and ld build the guest")
    results = []
    with tempfile.TemporaryDirectory(prefix="pyvmm-bench-blk-") as tmp:
        out = Path(tmp)
        disk = out / "disk.img"
        disk.write_bytes(os.urandom(DISK_SECTORS * 512))
        for workload, requests in (("seq", args.seq_requests), ("rand", args.rand_requests)):
            for runner in runners:
                print(f"blk: {workload} {runner} ...", file=sys.stderr, flush=True)
                result = measure(workload, runner, requests, out, disk, args.timeout)
                print(f"blk: {result}", file=sys.stderr, flush=True)
                results.append(result)
    table = format_markdown(results)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"schema": "pyvmm-bench-blk/1",
                                         "results": [asdict(r) for r in results]}, indent=2))
    if args.doc:
        replace_marked(args.doc, DOC_BEGIN, DOC_END, table, "virtio-blk from the guest (`blk`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

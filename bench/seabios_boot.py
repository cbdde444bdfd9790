"""The `seabios-boot` benchmark: wall time from start to SeaBIOS's boot step.

    python -m bench.seabios_boot [--engines interp,jit,kvm,qemu-tcg,qemu-kvm]
                                 [--bios FILE] [--timeout S] [--json FILE] [--doc FILE]

Every runner starts Debian's SeaBIOS (/usr/share/seabios/bios-256k.bin, the
`seabios` package) with 64 MiB of RAM and no disks, so its boot step is
"No bootable device." (or "Booting from ..." once a disk exists).  Each
runner is a child process whose COM1 output is read as it comes; the time to
the boot-step line is measured from the child's start (process start, Python
import and the VM's set-up included), and the child is killed there (SeaBIOS
would wait and reboot).  QEMU runs `-accel tcg` and `-accel kvm` with
`-nodefaults -machine graphics=off`, which makes QEMU offer
"etc/sercon-port" as pyvmm does, so SeaBIOS prints on COM1 in both.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.results import replace_marked
from bench.runners import QEMU, child_unavailable, runner_list

SEABIOS = Path("/usr/share/seabios/bios-256k.bin")
RAM_MIB = 64
RUNNERS = ("interp", "jit", "kvm", "qemu-tcg", "qemu-kvm")
BOOT_STEP_MARKERS = (b"No bootable device", b"Booting from ")
DOC_BEGIN = "<!-- seabios-boot:begin -->"
DOC_END = "<!-- seabios-boot:end -->"


@dataclass
class BootResult:
    runner: str
    seconds: float | None
    line: str
    note: str


def command(runner: str, bios: Path) -> list[str] | str:
    """The child's command line, or why the runner cannot run here."""
    unavailable = child_unavailable(runner)
    if unavailable is not None:
        return unavailable
    if runner.startswith("qemu-"):
        accel = runner.split("-", 1)[1]
        return [QEMU, "-accel", accel, "-bios", str(bios), "-m", str(RAM_MIB), "-nodefaults",
                "-machine", "graphics=off", "-serial", "stdio", "-display", "none",
                "-monitor", "none", "-no-reboot"]
    return [sys.executable, "-m", "pyvmm", "run", "--engine", runner, "--bios", str(bios),
            "-m", f"{RAM_MIB}M", "--serial", "stdio", "--debugcon", "none"]


def boot_step_line(serial: bytes) -> str | None:
    """The first complete COM1 line naming the boot step, or None yet."""
    for line in serial.split(b"\n")[:-1]:  # the last piece is not a whole line yet
        if any(marker in line for marker in BOOT_STEP_MARKERS):
            return line.decode("latin-1").strip()
    return None


def boot_once(runner: str, bios: Path, timeout: float) -> BootResult:
    argv = command(runner, bios)
    if isinstance(argv, str):
        return BootResult(runner, None, "", f"skipped: {argv}")
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    out = bytearray()
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    seconds, line, note = None, "", ""
    try:
        while True:
            left = timeout - (time.perf_counter() - started)
            if left <= 0:
                note = f"timed out after {timeout:g} s"
                break
            if not selector.select(min(left, 1.0)):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            out.extend(chunk)
            found = boot_step_line(bytes(out))
            if found is not None:
                seconds, line = time.perf_counter() - started, found
                break
    finally:
        selector.close()
        proc.kill()
        proc.wait()
    if seconds is None and not note:
        tail = bytes(out[-300:]).decode("latin-1").strip().splitlines()
        note = "no boot step; last line: " + (tail[-1] if tail else "(none)")
    return BootResult(runner, seconds, line, note)


def format_markdown(results: list[BootResult], bios: Path) -> str:
    lines = [DOC_BEGIN, "",
             f"`{bios}`, {RAM_MIB} MiB RAM, no disks. `python -m bench.seabios_boot` "
             "(bench/seabios_boot.py): seconds from the process start to SeaBIOS's "
             "boot-step line on COM1, all runners in one run.", "",
             "| runner | to the boot step (s) | line | note |", "|---|---|---|---|"]
    for r in results:
        seconds = f"{r.seconds:.2f}" if r.seconds is not None else "-"
        lines.append(f"| {r.runner} | {seconds} | {r.line} | {r.note} |")
    lines += ["", DOC_END]
    return "\n".join(lines)


def update_doc(path: Path, table: str) -> None:
    replace_marked(path, DOC_BEGIN, DOC_END, table, "SeaBIOS to its boot step (`seabios-boot`)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.seabios_boot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default=",".join(RUNNERS),
                        help=f"comma-separated runners (default: {','.join(RUNNERS)})")
    parser.add_argument("--bios", type=Path, default=SEABIOS,
                        help=f"the SeaBIOS image (default: {SEABIOS})")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="per-runner limit in seconds (default: 600)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--doc", type=Path, help="rewrite the seabios-boot table in this file")
    args = parser.parse_args(argv)
    runners = runner_list(parser, args.engines, RUNNERS)
    if not args.bios.is_file():
        parser.error(f"{args.bios} is absent (Debian package seabios)")
    results = []
    for runner in runners:
        print(f"seabios-boot: {runner} ...", file=sys.stderr, flush=True)
        result = boot_once(runner, args.bios, args.timeout)
        print(f"seabios-boot: {result}", file=sys.stderr, flush=True)
        results.append(result)
    table = format_markdown(results, args.bios)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"schema": "pyvmm-seabios-boot/1",
                                         "bios": str(args.bios),
                                         "results": [asdict(r) for r in results]}, indent=2))
    if args.doc:
        update_doc(args.doc, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

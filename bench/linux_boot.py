"""The `linux-boot` benchmark: wall time from start to the Linux guest's /init marker.

    python -m bench.linux_boot [--engines interp,jit,kvm,qemu-tcg,qemu-kvm] [--timeout S]
                               [--json FILE] [--doc docs/PERFORMANCE.md]

Every runner boots the same kernel and initramfs (pyvmm/guests/linux_build.py,
built if needed) with the same command line plus pyvmm_run=true, so /init
prints its marker and powers off at once.  Each runner is a child process
whose serial output is read as it comes: the time to the marker line is
measured from the child's start (process start, Python import and the VM's
set-up included, as a user waits for it).  pyvmm's interp and jit count
guest instructions; the count printed (`--stats`) runs up to the power-off,
a few instructions of /init past the marker.  QEMU runs `-accel tcg` and
`-accel kvm` with `-cpu qemu64` (which has SSE2) and `-kernel/-initrd/-append`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.results import replace_marked
from bench.runners import QEMU, child_unavailable, runner_list
from pyvmm.guests import linux_build

RAM_MIB = 128
RUNNERS = ("interp", "jit", "kvm", "qemu-tcg", "qemu-kvm")
DOC_BEGIN = "<!-- linux-boot:begin -->"
DOC_END = "<!-- linux-boot:end -->"
_INSTRUCTIONS = re.compile(rb"^instructions: (\d+)", re.M)


@dataclass
class BootResult:
    runner: str
    marker_seconds: float | None
    total_seconds: float
    instructions: int | None
    status: int | None
    note: str


def _command(runner: str, guest: linux_build.LinuxGuest, cmdline: str) -> list[str] | str:
    """The child's command line, or a reason the runner cannot run here."""
    unavailable = child_unavailable(runner)
    if unavailable is not None:
        return unavailable
    if runner.startswith("qemu-"):
        accel = runner.split("-", 1)[1]
        return [QEMU, "-accel", accel, "-cpu", "qemu64", "-m", str(RAM_MIB), "-kernel",
                str(guest.kernel), "-initrd", str(guest.initramfs), "-append", cmdline,
                "-serial", "stdio", "-display", "none", "-no-reboot", "-monitor", "none"]
    return [sys.executable, "-m", "pyvmm", "run", "--engine", runner, "--kernel",
            str(guest.kernel), "--initrd", str(guest.initramfs), "--append", cmdline,
            "-m", f"{RAM_MIB}M", "--serial", "stdio", "--stats"]


def boot_once(runner: str, guest: linux_build.LinuxGuest, cmdline: str,
              timeout: float) -> BootResult:
    command = _command(runner, guest, cmdline)
    if isinstance(command, str):
        return BootResult(runner, None, 0.0, None, None, f"skipped: {command}")
    marker = linux_build.INIT_MARKER.encode()
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    out = bytearray()
    err = bytearray()
    marker_at = None
    selector = selectors.DefaultSelector()
    assert proc.stdout is not None and proc.stderr is not None
    selector.register(proc.stdout, selectors.EVENT_READ, out)
    selector.register(proc.stderr, selectors.EVENT_READ, err)
    note = ""
    open_streams = 2
    while open_streams:
        left = timeout - (time.perf_counter() - started)
        if left <= 0:
            proc.kill()
            note = f"timed out after {timeout:g} s"
            break
        for key, _ in selector.select(min(left, 1.0)):
            chunk = os.read(key.fileobj.fileno(), 65536)
            if not chunk:
                selector.unregister(key.fileobj)
                open_streams -= 1
                continue
            key.data.extend(chunk)
            if marker_at is None and marker in out:
                marker_at = time.perf_counter() - started
    status = proc.wait()
    total = time.perf_counter() - started
    found = _INSTRUCTIONS.search(bytes(err))
    if marker_at is None and not note:
        tail = bytes(out[-300:]).decode("latin-1").strip().splitlines()
        note = "no marker; last serial line: " + (tail[-1] if tail else "(none)")
    return BootResult(runner, marker_at, total, int(found.group(1)) if found else None,
                      status, note)


def format_markdown(results: list[BootResult], cmdline: str) -> str:
    lines = [DOC_BEGIN, "",
             f"Kernel command line: `{cmdline}`; {RAM_MIB} MiB RAM. "
             "`python -m bench.linux_boot` (bench/linux_boot.py).", "",
             "| runner | to /init marker (s) | whole run to power-off (s) | guest instructions "
             "| note |", "|---|---|---|---|---|"]
    for r in results:
        marker = f"{r.marker_seconds:.1f}" if r.marker_seconds is not None else "-"
        total = f"{r.total_seconds:.1f}" if r.total_seconds else "-"
        count = f"{r.instructions:,}" if r.instructions is not None else "-"
        lines.append(f"| {r.runner} | {marker} | {total} | {count} | {r.note} |")
    lines += ["", DOC_END]
    return "\n".join(lines)


def update_doc(path: Path, table: str) -> None:
    replace_marked(path, DOC_BEGIN, DOC_END, table, "Linux boot (`linux-boot`)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.linux_boot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default=",".join(RUNNERS),
                        help=f"comma-separated runners (default: {','.join(RUNNERS)})")
    parser.add_argument("--timeout", type=float, default=1200.0,
                        help="per-runner limit in seconds (default: 1200)")
    parser.add_argument("--append", default=linux_build.DEFAULT_CMDLINE,
                        help=f"kernel command line (default: {linux_build.DEFAULT_CMDLINE})")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--doc", type=Path, help="rewrite the linux-boot table in this file")
    args = parser.parse_args(argv)
    runners = runner_list(parser, args.engines, RUNNERS)
    guest = linux_build.build()
    cmdline = f"{args.append} pyvmm_run=true"
    results = []
    for runner in runners:
        print(f"linux-boot: {runner} ...", file=sys.stderr, flush=True)
        result = boot_once(runner, guest, cmdline, args.timeout)
        print(f"linux-boot: {result}", file=sys.stderr, flush=True)
        results.append(result)
    table = format_markdown(results, cmdline)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"schema": "pyvmm-linux-boot/1", "cmdline": cmdline,
                                         "results": [asdict(r) for r in results]}, indent=2))
    if args.doc:
        update_doc(args.doc, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

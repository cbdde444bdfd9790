"""Who runs a benchmark image: pyvmm's engines in-process, QEMU and Bochs as references.

Every runner boots the same multiboot ELF with the same command line and
returns the guest's console output and the wall time of the whole run
(process or VM start included: the suite subtracts an n=0 run).  References
are optional: a runner that cannot run here says why (`availability`), and
the suite skips it with that reason.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pyvmm.guests import EXIT_SUCCESS_STATUS

RAM_MIB = 64                    # bench-mem needs 40 MiB (guests/bench/mem.asm)
QEMU = "qemu-system-x86_64"
QEMU_DEBUG_EXIT = "isa-debug-exit,iobase=0xf4,iosize=0x04"


@dataclass
class RunOutcome:
    """One run of one image."""

    wall_seconds: float
    output: str
    exit_status: int | None     # None when the runner has no exit status (Bochs)
    exits: int | None = None    # VM exits, where the runner counts them (pyvmm kvm)
    engine_instructions: int | None = None  # instructions the engine counted (interp)
    error: str = ""             # why the run failed (timeout, crash); empty if it ran


class Runner(Protocol):
    name: str
    kind: str                   # "pyvmm" or "reference"

    def availability(self) -> tuple[bool, str]: ...

    def version(self) -> str: ...

    def run(self, image: Path, cmdline: str, timeout: float) -> RunOutcome: ...




class PyvmmRunner:
    """One of pyvmm's engines, in this process (pyvmm.compare.run_engine)."""

    kind = "pyvmm"

    def __init__(self, engine: str) -> None:
        self.name = engine
        self.engine = engine

    def availability(self) -> tuple[bool, str]:
        from pyvmm.engines.registry import engine_availability

        return engine_availability(self.engine)

    def version(self) -> str:
        return ""

    def run(self, image: Path, cmdline: str, timeout: float) -> RunOutcome:
        from pyvmm.compare import run_engine
        from pyvmm.vm import ImageSpec

        spec = ImageSpec("multiboot", image, cmdline, label=image.stem)
        started = time.perf_counter()
        result = run_engine(self.engine, spec, RAM_MIB << 20, timeout)
        wall = time.perf_counter() - started
        if not result.available:
            return RunOutcome(wall, "", None, error=result.reason)
        exits = sum(result.counters.get("exits", {}).values()) if self.engine == "kvm" else None
        return RunOutcome(wall, result.output.decode("latin-1"), result.exit_status,
                          exits=exits, engine_instructions=result.instructions,
                          error="" if result.exit_status == EXIT_SUCCESS_STATUS
                          else f"stopped: {result.stop}")


def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    for line in (done.stdout + done.stderr).splitlines():
        if line.strip():
            return line.strip()
    return ""


def kvm_usable() -> tuple[bool, str]:
    if not os.path.exists("/dev/kvm"):
        return False, "no /dev/kvm on this host"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not readable and writable by this user"
    return True, ""


def child_unavailable(runner: str) -> str | None:
    """Why a runner started as a child process ("kvm", "kvm:OPTION", "qemu-tcg",
    "qemu-kvm") cannot run on this host, or None when it can."""
    base = runner.partition(":")[0]
    if base.startswith("qemu-") and shutil.which(QEMU) is None:
        return f"{QEMU} not installed"
    if base == "kvm" or base.endswith("-kvm"):
        ok, reason = kvm_usable()
        if not ok:
            return reason
    return None


def runner_list(parser: argparse.ArgumentParser, text: str, known: tuple[str, ...] | list[str],
                ) -> list[str]:
    """The comma-separated runners of an option, in order; an unknown one is a usage error."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"unknown runner(s) {', '.join(unknown)} (choose from {', '.join(known)})")
    return names


class QemuRunner:
    """qemu-system-x86_64 -accel tcg|kvm -cpu qemu64 -kernel IMAGE (its multiboot loader)."""

    kind = "reference"

    def __init__(self, accel: str) -> None:
        self.accel = accel
        self.name = f"qemu-{accel}"

    def availability(self) -> tuple[bool, str]:
        if shutil.which(QEMU) is None:
            return False, f"{QEMU} not installed (Debian: apt-get install qemu-system-x86)"
        if self.accel == "kvm":
            return kvm_usable()
        return True, ""

    def version(self) -> str:
        return _first_line([QEMU, "--version"])

    def command(self, image: Path, cmdline: str) -> list[str]:
        return [QEMU, "-accel", self.accel, "-cpu", "qemu64", "-m", str(RAM_MIB),
                "-kernel", str(image), "-append", cmdline, "-serial", "stdio",
                "-display", "none", "-device", QEMU_DEBUG_EXIT, "-no-reboot"]

    def run(self, image: Path, cmdline: str, timeout: float) -> RunOutcome:
        started = time.perf_counter()
        try:
            done = subprocess.run(self.command(image, cmdline), capture_output=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as expired:
            out = (expired.stdout or b"").decode("latin-1")
            return RunOutcome(time.perf_counter() - started, out, None,
                              error=f"timed out after {timeout:g} s")
        wall = time.perf_counter() - started
        error = "" if done.returncode == EXIT_SUCCESS_STATUS else (
            f"exit status {done.returncode}: {done.stderr.decode('latin-1').strip()[-200:]}")
        return RunOutcome(wall, done.stdout.decode("latin-1"), done.returncode, error=error)

"""Bochs as a reference runner.

Bochs cannot load a multiboot kernel itself, so each run gets a small hard
disk image: our boot sector (bench/bochs/mbloader.asm, assembled with NASM
once per session) at LBA 0, the command line at LBA 1, the ELF from LBA 2.
The boot sector does what a multiboot loader does (see its header).

Debian's bochs 2.7 has no `nogui` display library and is built with the
internal debugger, so the configuration uses the `rfb` display (a VNC
server nobody connects to, `timeout=0` so it does not wait for one), a
dummy sound driver (ALSA aborts without a sound card), and a debugger
command file with `c` (continue) so it does not stop at the first
instruction.  Bochs has no isa-debug-exit device: the guest's write to port
0xF4 does nothing, so the run ends when the result line appears in COM1's
file; then we kill the process we started.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.results import RESULT_LINE
from bench.runners import RAM_MIB, RunOutcome

BOCHS = "bochs"
ROM = Path("/usr/share/bochs/BIOS-bochs-latest")
VGA_ROM = Path("/usr/share/bochs/VGABIOS-lgpl-latest")
LOADER_SOURCE = Path(__file__).resolve().parent / "bochs" / "mbloader.asm"
SECTOR = 512
# Bochs wants a flat disk of whole cylinders: 16 heads x 63 sectors.
HEADS, SECTORS_PER_TRACK = 16, 63
CYLINDER_BYTES = HEADS * SECTORS_PER_TRACK * SECTOR
LOADER_SECTORS = 127            # what mbloader reads after itself (its SECTORS)
POLL_SECONDS = 0.01

CONFIG = """\
megs: {megs}
romimage: file={rom}
vgaromimage: file={vga_rom}
cpu: model=corei7_sandy_bridge_2600k, count=1
ata0-master: type=disk, path={disk}, mode=flat, cylinders={cylinders}, heads={heads}, spt={spt}
boot: disk
com1: enabled=1, mode=file, dev={serial}
display_library: rfb, options="timeout=0"
sound: driver=dummy
speaker: enabled=0
clock: sync=none
log: {log}
"""


def disk_image(loader: bytes, cmdline: str, kernel: bytes) -> bytes:
    """Boot sector, command-line sector, kernel; padded to whole cylinders."""
    if len(loader) != SECTOR or loader[510:] != b"\x55\xaa":
        raise ValueError("the loader must be one boot sector ending in 55 AA")
    command = cmdline.encode() + b"\0"
    if len(command) > SECTOR:
        raise ValueError("command line longer than one sector")
    if len(kernel) > (LOADER_SECTORS - 1) * SECTOR:
        raise ValueError(f"kernel of {len(kernel)} bytes is larger than the loader reads")
    data = loader + command.ljust(SECTOR, b"\0") + kernel
    cylinders = -(-max(len(data), (LOADER_SECTORS + 1) * SECTOR) // CYLINDER_BYTES)
    return data.ljust(cylinders * CYLINDER_BYTES, b"\0")


class BochsRunner:
    """bochs -q with a generated config, booting our multiboot boot sector."""

    name = "bochs"
    kind = "reference"

    def __init__(self) -> None:
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._loader: bytes | None = None
        self._runs = 0

    def availability(self) -> tuple[bool, str]:
        if shutil.which(BOCHS) is None:
            return False, "bochs not installed (Debian: apt-get install bochs bochsbios vgabios)"
        for rom, package in ((ROM, "bochsbios"), (VGA_ROM, "vgabios")):
            if not rom.exists():
                return False, f"{rom} missing (Debian package {package})"
        if shutil.which("nasm") is None:
            return False, "nasm is needed to assemble the Bochs boot loader"
        return True, ""

    def version(self) -> str:
        try:
            done = subprocess.run([BOCHS, "--help"], capture_output=True, text=True, timeout=10,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        for line in (done.stdout + done.stderr).splitlines():
            if "Bochs x86 Emulator" in line:
                return line.strip()
        return ""

    def _workdir(self) -> Path:
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="pyvmm-bench-bochs-")
        return Path(self._dir.name)

    def loader(self) -> bytes:
        if self._loader is None:
            out = self._workdir() / "mbloader.bin"
            subprocess.run(["nasm", "-f", "bin", f"-DMEM_UPPER_KIB={(RAM_MIB - 1) * 1024}",
                            "-o", str(out), str(LOADER_SOURCE)], check=True,
                           capture_output=True)
            self._loader = out.read_bytes()
        return self._loader

    def run(self, image: Path, cmdline: str, timeout: float) -> RunOutcome:
        work = self._workdir()
        self._runs += 1                 # a fresh name: a killed Bochs leaves disk.img.lock
        disk = work / f"disk{self._runs}.img"
        serial = work / "com1.txt"
        config = work / "bochsrc"
        commands = work / "debugger-commands"
        data = disk_image(self.loader(), cmdline, image.read_bytes())
        disk.write_bytes(data)
        serial.unlink(missing_ok=True)
        config.write_text(CONFIG.format(
            megs=RAM_MIB, rom=ROM, vga_rom=VGA_ROM, disk=disk,
            cylinders=len(data) // CYLINDER_BYTES, heads=HEADS, spt=SECTORS_PER_TRACK,
            serial=serial, log=work / "bochs.log"))
        commands.write_text("c\n")
        started = time.perf_counter()
        process = subprocess.Popen([BOCHS, "-q", "-f", str(config), "-rc", str(commands)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, cwd=work)
        try:
            output, error = "", ""
            while True:
                output = serial.read_text("latin-1") if serial.exists() else ""
                match = RESULT_LINE.search(output)
                if match and "\n" in output[match.end():]:
                    break
                if process.poll() is not None:
                    error = f"bochs exited with status {process.returncode} (see its log)"
                    break
                if time.perf_counter() - started > timeout:
                    error = f"timed out after {timeout:g} s"
                    break
                time.sleep(POLL_SECONDS)
            wall = time.perf_counter() - started
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            disk.unlink(missing_ok=True)
            disk.with_name(disk.name + ".lock").unlink(missing_ok=True)
        return RunOutcome(wall, output, None, error=error)

    def close(self) -> None:
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

"""`--linux-entry real`: SeaBIOS boots pyvmm's linuxboot option ROM, which loads the
kernel from fw_cfg and enters its 16-bit real-mode setup code.

First a bzImage-shaped test image (linux_real/tiny_bzimage.asm, assembled here
with nasm): a setup header and 16-bit code that checks the entry state
boot.rst promises and prints what the ROM put in RAM -- the command line, the
protected-mode part at 0x100000, the initrd (read back through the BIOS's
INT 15h AH=87h) -- in seconds under interp, jit and kvm.  Then the built Linux
guest: the kernel's own setup code (INT 15h E820, INT 16h, INT 10h, A20,
protected mode), its decompressor and the kernel, to the /init marker and one
command's output.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyvmm.engines.registry import engine_availability
from pyvmm.guests import linux_build
from pyvmm.machine.stop import StopKind
from tests.conftest import ROOT
from tests.guests.test_linux import ENGINE_SKIPS, GUEST, needs_guest

SEABIOS = Path("/usr/share/seabios/bios-256k.bin")
TINY_SOURCE = Path(__file__).resolve().parent / "linux_real" / "tiny_bzimage.asm"
pytestmark = pytest.mark.skipif(not SEABIOS.exists(),
                                reason=f"{SEABIOS} is absent (Debian package seabios)")
CMDLINE = "hello from the command line"
INITRD = b"INITRD-0123456789ABCDEF"


def _run(engine: str, *args: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyvmm", "run", "--engine", engine,
                           "--linux-entry", "real", *args, "--timeout", str(timeout)],
                          cwd=ROOT, capture_output=True, timeout=timeout + 300,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("nasm") is None:
        pytest.skip("assembling the test image needs nasm")
    out = tmp_path_factory.mktemp("tiny-bzimage")
    image, initrd = out / "tiny.bzImage", out / "initrd.bin"
    subprocess.run(["nasm", "-Werror", "-f", "bin", "-o", str(image), str(TINY_SOURCE)],
                   check=True, capture_output=True)
    initrd.write_bytes(INITRD)
    return image, initrd


@pytest.mark.parametrize("engine", ["interp", "jit", "kvm"])
def test_seabios_and_the_rom_enter_the_setup_code(engine: str, tiny, tmp_path: Path) -> None:
    ok, reason = engine_availability(engine)
    if not ok:
        pytest.skip(reason)
    image, initrd = tiny
    log = tmp_path / "seabios.log"
    done = _run(engine, "--kernel", str(image), "--initrd", str(initrd), "--append", CMDLINE,
                "--debugcon", f"file:{log}", timeout=600)
    out = done.stdout.decode("latin-1")
    assert done.returncode == 33, out[-2000:] + done.stderr.decode("latin-1")[-2000:]
    assert f"cmdline: {CMDLINE}\n" in out
    assert "kernel: tiny protected-mode kernel\n" in out
    assert f"initrd: {INITRD[:16].decode()}\n" in out
    assert "real-entry checks passed" in out
    debug = log.read_text(errors="replace")
    assert re.search(r"boot order:\s+1: /rom@genroms/linuxboot.bin", debug), debug[-2000:]
    assert "Booting from ROM" in out


@pytest.mark.parametrize("engine", ["interp", "jit", "kvm"])
def test_a_reset_boots_the_kernel_again(engine: str, tiny) -> None:
    """The VM is firmware-booted: the keyboard controller's reset re-enters SeaBIOS,
    which runs the ROM, which loads the kernel from fw_cfg again (the image's CMOS
    mark tells its second run from the first)."""
    ok, reason = engine_availability(engine)
    if not ok:
        pytest.skip(reason)
    image, initrd = tiny
    done = _run(engine, "--kernel", str(image), "--initrd", str(initrd), "--append", "reset",
                timeout=600)
    out = done.stdout.decode("latin-1")
    assert done.returncode == 33, out[-2000:] + done.stderr.decode("latin-1")[-2000:]
    assert out.count("SeaBIOS (version") == 2 and out.count("cmdline: reset\n") == 2, out
    assert out.index("resetting the machine") < out.index("booted again after the reset")


def test_a_snapshot_taken_in_seabios_boots_the_kernel_and_reboots_it(tiny, tmp_path: Path) -> None:
    """A snapshot records how the kernel is entered: a VM restored while SeaBIOS is
    still in its POST loads the kernel from fw_cfg (items the snapshot's memory does
    not hold, published again from the recorded files), and its reset boots it again."""
    image, initrd = tiny
    snap = tmp_path / "seabios.snap"
    saved = _run("jit", "--kernel", str(image), "--initrd", str(initrd), "--append", "reset",
                 "--debugcon", "none", "--snapshot-to", str(snap),
                 "--snapshot-after-instructions", "2000000", timeout=600)
    assert saved.returncode == 0, saved.stderr.decode()[-2000:]
    assert b"cmdline:" not in saved.stdout  # paused before the ROM ran
    done = subprocess.run([sys.executable, "-m", "pyvmm", "run", "--restore", str(snap),
                           "--engine", "interp", "--debugcon", "none", "--timeout", "600"],
                          cwd=ROOT, capture_output=True, timeout=900, stdin=subprocess.DEVNULL)
    out = done.stdout.decode("latin-1")
    assert done.returncode == 33, out[-2000:] + done.stderr.decode("latin-1")[-2000:]
    assert out.count("cmdline: reset\n") == 2, out
    assert out.index("resetting the machine") < out.index("booted again after the reset")


def test_a_hypervisor_file_boots_the_kernel_through_its_real_mode_entry(tiny,
                                                                       tmp_path: Path) -> None:
    """The TOML keys are the options' names: kernel (a bzImage, detected as with
    --kernel), initrd, append, linux_entry."""
    image, initrd = tiny
    config = tmp_path / "real.toml"
    config.write_text(f'[[vm]]\nname = "tiny"\nengine = "jit"\ntimeout = 600\n'
                      f'kernel = "{image}"\ninitrd = "{initrd}"\nappend = "{CMDLINE}"\n'
                      f'linux_entry = "real"\n')
    done = subprocess.run([sys.executable, "-m", "pyvmm", "hypervisor", str(config)], cwd=ROOT,
                          capture_output=True, timeout=900, stdin=subprocess.DEVNULL)
    out = done.stdout.decode("latin-1")
    assert done.returncode == 33, out[-2000:] + done.stderr.decode("latin-1")[-2000:]
    assert f"[tiny] cmdline: {CMDLINE}\n" in out, out[-2000:]
    assert f"[tiny] initrd: {INITRD[:16].decode()}\n" in out, out[-2000:]
    assert "[tiny] real-entry checks passed" in out, out[-2000:]


def test_no_reboot_stops_at_the_reset(tiny) -> None:
    image, initrd = tiny
    done = _run("jit", "--kernel", str(image), "--initrd", str(initrd), "--append", "reset",
                "--no-reboot", timeout=600)
    out = done.stdout.decode("latin-1")
    assert done.returncode == StopKind.RESET.exit_code, out[-2000:]
    assert "resetting the machine" in out and "booted again" not in out
    assert "--no-reboot" in done.stderr.decode(), done.stderr.decode()


# The software boots take minutes: the same opt-out as tests/guests/test_linux.py.
# Under kvm this nested host emulates real mode and the guest's ring 0 at ~1 M
# instructions/s (measured below, KVM_REAL_ENTRY).
KVM_REAL_ENTRY = ENGINE_SKIPS["kvm"]
REAL_SKIPS = {"interp": ENGINE_SKIPS["interp"], "jit": ENGINE_SKIPS["jit"],
              "kvm": KVM_REAL_ENTRY}


@needs_guest
@pytest.mark.parametrize("engine", [
    pytest.param(name, marks=pytest.mark.skipif(reason is not None, reason=str(reason)))
    for name, reason in REAL_SKIPS.items()])
def test_linux_boots_through_its_real_mode_setup_code(engine: str, tmp_path: Path) -> None:
    assert GUEST is not None
    # SeaBIOS writes each character to its log (port 0x402) and then to the screen,
    # which its serial console copies to COM1; the UART sends at its line rate, so on
    # one stdout the two copies interleave.  The log goes to its own file.
    log = tmp_path / "seabios.log"
    done = _run(engine, "--kernel", str(GUEST.kernel), "--initrd", str(GUEST.initramfs),
                "-m", "128M", "--debugcon", f"file:{log}",
                "--append", f'{linux_build.DEFAULT_CMDLINE} pyvmm_run="uname -a"',
                timeout=1500)
    output = done.stdout + done.stderr
    debug = log.read_text(errors="replace")
    assert re.search(r"boot order:\s+1: /rom@genroms/linuxboot.bin", debug), debug[-2000:]
    assert b"Booting from ROM" in done.stdout, output[-3000:]
    # The setup code's memory map is SeaBIOS's (INT 15h E820), not pyvmm's own.
    assert b"BIOS-e820: [mem 0x000000000009fc00-0x000000000009ffff] reserved" in output, \
        output[-3000:]
    assert linux_build.INIT_MARKER.encode() in output, output[-3000:]
    assert re.search(rb"Linux \S+ 6\.1\.\d+", output), output[-3000:]
    assert b"pyvmm-linux: command exited with status 0" in output, output[-3000:]
    assert done.returncode == StopKind.POWER_OFF.exit_code, output[-3000:]

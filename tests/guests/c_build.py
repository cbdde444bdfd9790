"""Build a freestanding 32-bit multiboot kernel from C with the host's gcc and ld."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

LINKER_SCRIPT = Path(__file__).parent / "c_kernel" / "kernel.ld"


def build_c_kernel(source: Path, out: Path, flags: list[str]) -> Path:
    """kernel.elf from `source` (skips the test where gcc/ld cannot build it)."""
    if shutil.which("gcc") is None or shutil.which("ld") is None:
        pytest.skip("gcc and ld are needed to build the C test kernel")
    obj, elf = out / f"{source.stem}.o", out / f"{source.stem}.elf"
    compile_ = subprocess.run(
        ["gcc", "-m32", "-ffreestanding", "-fno-pic", "-fno-stack-protector", "-nostdlib",
         *flags, "-c", str(source), "-o", str(obj)], capture_output=True, text=True)
    if compile_.returncode:
        pytest.skip(f"gcc cannot build 32-bit freestanding code here: {compile_.stderr[:200]}")
    subprocess.run(["ld", "-m", "elf_i386", "-T", str(LINKER_SCRIPT), "--build-id=none",
                    "-o", str(elf), str(obj)], check=True)
    return elf

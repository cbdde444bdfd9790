"""Compile the native oracle runner with the host's gcc, once, into a cache.

The binary is never committed: it is rebuilt whenever the C source or the
compiler command changes (the cache key is a hash of both).  It is linked
non-PIE at a low address so the runner's absolute-address assembly and its
exit stub lie below 2 GiB, reachable from 16-, 32- and 64-bit code alike.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("native_runner.c")
# Where the runner's own text goes: clear of the code/data areas it maps.
TEXT_SEGMENT = 0x30000000
CFLAGS = ("-O2", "-Wall", "-no-pie", "-U_FORTIFY_SOURCE",
          f"-Wl,-Ttext-segment={TEXT_SEGMENT:#x}")


class BuildError(RuntimeError):
    """gcc is missing or failed."""


def compiler() -> str | None:
    """The C compiler to use (CC or gcc), or None when there is none."""
    cc = os.environ.get("CC", "gcc")
    return shutil.which(cc)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pyvmm" / "oracle"


def build_runner() -> Path:
    """Return the path of a built runner, compiling it if needed."""
    cc = compiler()
    if cc is None:
        raise BuildError("no C compiler (gcc) found on PATH")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join((cc, *CFLAGS)).encode()).hexdigest()[:16]
    target = cache_dir() / f"native_runner-{key}"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / "native_runner"
        result = subprocess.run([cc, *CFLAGS, "-o", str(out), str(SOURCE)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"gcc failed:\n{result.stderr}")
        os.replace(out, target)  # atomic: concurrent builders race harmlessly
    return target

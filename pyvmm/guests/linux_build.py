"""Builds pyvmm's Linux guest: a small kernel and a busybox initramfs.

The kernel comes from Debian's linux-source-6.1 package
(/usr/src/linux-source-6.1.tar.xz): `make tinyconfig` for x86_64, then the
committed fragment guests/linux/config.fragment merged on top with the
kernel's scripts/kconfig/merge_config.sh, then `make bzImage`.  The
initramfs is a gzip-compressed "newc" cpio archive (the kernel's
Documentation/driver-api/early-userspace/buffer-format.rst) holding Debian's
static busybox (/bin/busybox), a symlink per applet, the /dev/console node
the kernel opens before it runs /init, and guests/linux/init.

Both are build products, never committed: they go to a cache outside the
work tree, ~/.cache/pyvmm/linux/<key>/ (or $PYVMM_CACHE/linux/<key>/), where
the key hashes every input (the fragment, the source package's version and
the build recipe for the kernel; the init script, busybox and this file for
the initramfs), so a changed input builds anew and an
unchanged one is reused.  The kernel build is long (minutes on two cores):
its progress is shown as it goes.

    python -m pyvmm.guests.linux_build [kernel|initramfs|all]
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pyvmm.errors import ConfigError

SOURCE_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
SOURCE_PACKAGE = "linux-source-6.1"
BUSYBOX = Path("/bin/busybox")
GUEST_DIR = Path(__file__).resolve().parents[2] / "guests" / "linux"
FRAGMENT = GUEST_DIR / "config.fragment"
INIT_SCRIPT = GUEST_DIR / "init"
# The line guests/linux/init prints once userspace runs.
INIT_MARKER = "pyvmm-linux: init reached"
# noxsave: the kernel saves FPU state with FXSAVE, not XSAVE/XRSTOR, which KVM's
# instruction emulator (guest ring 0 on nested hosts like ours) cannot run.
DEFAULT_CMDLINE = "console=ttyS0 nolapic noapic noxsave"
JOBS = 2
# The build steps, hashed into the kernel's cache key (with the fragment and the
# source package version); change this string when build_kernel's steps change.
KERNEL_RECIPE = b"make tinyconfig; merge_config.sh -m fragment; make olddefconfig; make bzImage"


@dataclass(frozen=True)
class LinuxGuest:
    """The built kernel and initramfs, by path."""

    kernel: Path
    initramfs: Path


def cache_root() -> Path:
    base = os.environ.get("PYVMM_CACHE") or os.path.join(Path.home(), ".cache", "pyvmm")
    return Path(base) / "linux"


def _package_version(package: str) -> str:
    try:
        result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                                capture_output=True, text=True, check=False)
    except OSError:
        return "unknown"
    return result.stdout.strip() or "unknown"


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def _require(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise ConfigError(f"{what} {path} not found (apt-get install {what})")
    return path.read_bytes()


def kernel_key() -> str:
    """Hash of the kernel's inputs: fragment, source package version, build recipe."""
    if not FRAGMENT.is_file():
        raise ConfigError(f"{FRAGMENT} not found: the Linux guest is built from a source checkout")
    return _digest(FRAGMENT.read_bytes(), _package_version(SOURCE_PACKAGE).encode(),
                   KERNEL_RECIPE)


def initramfs_key() -> str:
    """Hash of the initramfs's inputs: init, busybox, this builder."""
    return _digest(INIT_SCRIPT.read_bytes(), _require(BUSYBOX, "busybox-static"),
                   Path(__file__).read_bytes())


def _say(message: str) -> None:
    print(f"linux-build: {message}", file=sys.stderr, flush=True)


def _source_tree() -> Path:
    """The unpacked linux-source tree in the cache (unpacked once per package version)."""
    version = _package_version(SOURCE_PACKAGE)
    tree = cache_root() / f"src-{version}"
    done = tree / ".pyvmm-unpacked"
    if done.exists():
        return tree / "linux-source-6.1"
    if not SOURCE_TARBALL.is_file():
        raise ConfigError(f"{SOURCE_TARBALL} not found (apt-get install {SOURCE_PACKAGE})")
    _say(f"unpacking {SOURCE_TARBALL} into {tree}")
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    subprocess.run(["tar", "-C", str(tree), "-xJf", str(SOURCE_TARBALL)], check=True)
    done.touch()
    return tree / "linux-source-6.1"


def _make(src: Path, out: Path, *targets: str, log: Path) -> None:
    """Runs make in the kernel tree, showing one progress line per 100 output lines."""
    cmd = ["nice", "make", "-C", str(src), f"O={out}", "ARCH=x86_64", f"-j{JOBS}", *targets]
    start = time.monotonic()
    lines = 0
    with open(log, "a") as log_file, subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log_file.write(line)
            lines += 1
            if lines % 100 == 0:
                _say(f"{' '.join(targets)}: {lines} steps, {time.monotonic() - start:.0f} s, "
                     f"last: {line.strip()[:70]}")
        status = proc.wait()
    if status != 0:
        raise ConfigError(f"kernel build failed (make {' '.join(targets)}, status {status}); "
                          f"see {log}")


def build_kernel() -> Path:
    """Builds (or finds in the cache) the bzImage; returns its path."""
    out = cache_root() / f"kernel-{kernel_key()}"
    image = out / "bzImage"
    if image.is_file():
        return image
    src = _source_tree()
    build = out / "build"
    build.mkdir(parents=True, exist_ok=True)
    log = out / "build.log"
    start = time.monotonic()
    _say(f"building the kernel in {build} (log {log}); this takes a while")
    _make(src, build, "tinyconfig", log=log)
    subprocess.run([str(src / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(build),
                    str(build / ".config"), str(FRAGMENT)],
                   check=True, cwd=src, stdout=open(log, "a"), stderr=subprocess.STDOUT)
    _make(src, build, "olddefconfig", log=log)
    _check_config(build / ".config")
    _make(src, build, "bzImage", log=log)
    shutil.copyfile(build / "arch/x86/boot/bzImage", image.with_suffix(".tmp"))
    image.with_suffix(".tmp").rename(image)
    _say(f"kernel built in {time.monotonic() - start:.0f} s: {image}")
    return image


def _check_config(config: Path) -> None:
    """Every option the fragment sets must survive olddefconfig (a dropped one is a bug);
    an "=n" holds when the option is off or not offered at all."""
    have = set(config.read_text().splitlines())
    missing = []
    for line in FRAGMENT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        if (f"{name}=y" in have) if value == "n" else (line not in have):
            missing.append(line)
    if missing:
        raise ConfigError(f"kernel config dropped {', '.join(missing)} (unmet dependencies)")


class _Cpio:
    """Writer for the "newc" cpio format (magic 070701, hex fields, 4-byte alignment)."""

    def __init__(self) -> None:
        self.data = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, body: bytes = b"", rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        fields = [self.ino, mode, 0, 0, nlink, 0, len(body), 0, 0, rdev[0], rdev[1],
                  len(name) + 1, 0]
        self.ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.data.write(header + name.encode() + b"\0")
        self._pad()
        self.data.write(body)
        self._pad()

    def _pad(self) -> None:
        self.data.write(b"\0" * (-self.data.tell() % 4))

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755, nlink=2)

    def file(self, name: str, body: bytes, perm: int = 0o755) -> None:
        self._entry(name, 0o100000 | perm, body)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self.ino = 0
        self._entry("TRAILER!!!", 0)
        return self.data.getvalue()


def _applets() -> list[str]:
    """Busybox's applets with their install paths (`busybox --list-full`)."""
    result = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True,
                            check=True)
    return sorted(set(result.stdout.split()))


def build_initramfs() -> Path:
    """Builds (or finds in the cache) initramfs.cpio.gz; returns its path."""
    out = cache_root() / f"initramfs-{initramfs_key()}"
    image = out / "initramfs.cpio.gz"
    if image.is_file():
        return image
    cpio = _Cpio()
    for directory in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys",
                      "tmp", "root", "etc"):
        cpio.directory(directory)
    cpio.char_device("dev/console", 5, 1)
    cpio.file("bin/busybox", BUSYBOX.read_bytes())
    for applet in _applets():
        if applet != "bin/busybox":
            depth = applet.count("/")
            cpio.symlink(applet, "../" * depth + "bin/busybox")
    cpio.file("init", INIT_SCRIPT.read_bytes())
    out.mkdir(parents=True, exist_ok=True)
    tmp = image.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(cpio.finish(), compresslevel=9, mtime=0))
    tmp.rename(image)
    _say(f"initramfs built: {image}")
    return image


def build() -> LinuxGuest:
    """Both halves of the guest, built if needed."""
    return LinuxGuest(kernel=build_kernel(), initramfs=build_initramfs())


def main(argv: list[str] | None = None) -> int:
    what = (argv if argv is not None else sys.argv[1:]) or ["all"]
    try:
        if what[0] == "kernel":
            print(build_kernel())
        elif what[0] == "initramfs":
            print(build_initramfs())
        else:
            guest = build()
            print(guest.kernel)
            print(guest.initramfs)
    except (ConfigError, subprocess.CalledProcessError) as err:
        print(f"linux-build: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

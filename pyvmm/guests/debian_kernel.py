"""Debian's stock kernel, the one users already have: `linux-image-amd64`'s vmlinuz.

It boots with the same busybox initramfs as pyvmm's own Linux guest
(pyvmm/guests/linux_build.py).  Where the host has the package installed,
its /boot/vmlinuz-<release> is used as it is.  Otherwise the image package
that the `linux-image-amd64` metapackage depends on is fetched from the
host's configured Debian archive with `apt-get download` (nothing is
installed) and its vmlinuz unpacked into the cache,
~/.cache/pyvmm/linux/debian-<package>_<version>/ (or $PYVMM_CACHE/linux/...),
keyed by the package name and version.

    python -m pyvmm.guests.debian_kernel      # prints the vmlinuz path
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pyvmm.errors import ConfigError
from pyvmm.guests.linux_build import cache_root

METAPACKAGE = "linux-image-amd64"


def _run(*cmd: str, cwd: Path | None = None) -> str:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, check=False)
    except OSError as error:
        raise ConfigError(f"{cmd[0]}: {error.strerror} (a Debian host with apt is needed "
                          f"for Debian's kernel)") from None
    if result.returncode != 0:
        raise ConfigError(f"`{' '.join(cmd)}` failed: {result.stderr.strip()[-300:]}")
    return result.stdout


def image_package() -> tuple[str, str]:
    """The kernel image package `linux-image-amd64` depends on, and its candidate version."""
    depends = re.search(r"Depends: (linux-image-\S+)", _run("apt-cache", "depends", METAPACKAGE))
    if depends is None:
        raise ConfigError(f"apt knows no {METAPACKAGE} (run `apt-get update` first)")
    package = depends[1]
    candidate = re.search(r"Candidate: (\S+)", _run("apt-cache", "policy", package))
    if candidate is None or candidate[1] == "(none)":
        raise ConfigError(f"apt has no candidate version of {package} (run `apt-get update`)")
    return package, candidate[1]


def installed_kernel(package: str) -> Path | None:
    """/boot/vmlinuz-<release> when `package` (linux-image-<release>) is installed."""
    release = package.removeprefix("linux-image-")
    path = Path("/boot") / f"vmlinuz-{release}"
    status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                            capture_output=True, text=True, check=False).stdout
    return path if "install ok installed" in status and path.is_file() else None


def stock_kernel() -> Path:
    """The path of Debian's stock vmlinuz: the installed one, else fetched into the cache."""
    package, version = image_package()
    installed = installed_kernel(package)
    if installed is not None:
        return installed
    out = cache_root() / f"debian-{package}_{version}"
    image = out / "vmlinuz"
    if image.is_file():
        return image
    print(f"debian-kernel: fetching {package} {version} (about 70 MB) into {out}",
          file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as work:
        _run("apt-get", "download", f"{package}={version}", cwd=Path(work))
        debs = list(Path(work).glob("*.deb"))
        if len(debs) != 1:
            raise ConfigError(f"apt-get download {package} gave {len(debs)} files")
        tree = Path(work) / "tree"
        tree.mkdir()
        # dpkg-deb unpacks the package's files without installing anything.
        _run("dpkg-deb", "-x", str(debs[0]), str(tree))
        found = list((tree / "boot").glob("vmlinuz-*"))
        if len(found) != 1:
            raise ConfigError(f"{debs[0].name} holds {len(found)} vmlinuz files, not one")
        shutil.copyfile(found[0], image.with_suffix(".tmp"))
        image.with_suffix(".tmp").rename(image)
    return image


def main() -> int:
    try:
        print(stock_kernel())
    except ConfigError as error:
        print(f"debian-kernel: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

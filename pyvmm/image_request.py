"""What to boot, as a user asked for it: the command line's image options and a
hypervisor TOML file's keys both become an `ImageSpec` here, with the same
checks and the same kind detection (`--kernel`/`kernel` takes a bzImage, a
vmlinux or a multiboot kernel).  The rows are pyvmm/boot/registry.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pyvmm.boot.linux import LINUX_ENTRIES
from pyvmm.boot.registry import IMAGE_OPTIONS, kinds_taking, loader
from pyvmm.errors import ConfigError
from pyvmm.vm import ImageSpec

# How the error messages name the kinds that take an append.
_KIND_PLURALS = {"multiboot": "multiboot kernels", "linux": "Linux bzImages"}


def _kinds_phrase(kinds: tuple[str, ...]) -> str:
    names = [_KIND_PLURALS.get(kind, f"{kind} images") for kind in kinds]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def option_name(key: str) -> str:
    """A key as the command line spells it: linux_entry -> --linux-entry."""
    return "--" + key.replace("_", "-")


def image_spec(files: dict[str, Path], guest: str | None = None, append: str | None = None,
               initrd: Path | None = None, linux_entry: str | None = None,
               name: Callable[[str], str] = option_name,
               guest_name: str = "a bundled GUEST (see pyvmm guests)") -> ImageSpec:
    """`files`: the IMAGE_OPTIONS keys given, with their paths.  `name` spells a
    key as the user wrote it, for the errors.  The image is read (and its kind
    detected) before this returns, so a bad one is reported before any engine
    is set up."""
    given = [(option, files[option.key]) for option in IMAGE_OPTIONS if option.key in files]
    firmware = None
    if linux_entry in loader("linux").firmware_entries and "kernel" in files:
        # A kernel entered through firmware: a BIOS beside it is the firmware it boots.
        firmware = files.get("bios")
        given = [(option, path) for option, path in given if option.key != "bios"]
    if guest is not None:
        if given:
            raise ConfigError(f"give either {guest_name} or an image option, not both")
        spec = ImageSpec.bundled(guest, append or "")
    elif len(given) != 1:
        keys = ", ".join(name(option.key) for option in IMAGE_OPTIONS)
        raise ConfigError(f"give exactly one of {keys}, or {guest_name}")
    else:
        option, path = given[0]
        spec = ImageSpec(option.kind, path, append or "", label=str(path))
        if option.detect is not None:
            spec.kind = option.detect(spec.read(), str(path))
    if initrd is not None:
        if not loader(spec.kind).initrd:
            raise ConfigError(f"{name('initrd')} only applies to Linux kernels, and "
                              f"{spec.label} is a {spec.kind}")
        spec.initrd = initrd
    if linux_entry is not None:
        if linux_entry not in LINUX_ENTRIES:
            raise ConfigError(f"{name('linux_entry')} {linux_entry!r}: expected one of "
                              f"{', '.join(LINUX_ENTRIES)}")
        if spec.kind != "linux":
            raise ConfigError(f"{name('linux_entry')} only applies to Linux kernels, and "
                              f"{spec.label} is a {spec.kind}")
        spec.linux_entry = linux_entry
        spec.firmware = firmware
    if append is not None and not loader(spec.kind).cmdline:
        raise ConfigError(f"{name('append')} only applies to "
                          f"{_kinds_phrase(kinds_taking('cmdline'))}, and {spec.label} is a "
                          f"{spec.kind}")
    spec.read()
    return spec

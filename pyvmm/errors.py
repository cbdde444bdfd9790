"""Exceptions pyvmm raises to its callers.

Everything a user can cause (a bad image, a bad option, a guest touching
memory it does not have) is a `PyvmmError` with a one-line message; the CLI
prints that line and exits with a documented status, never a traceback.
"""

from __future__ import annotations


class PyvmmError(Exception):
    """Base class: its str() is a complete one-line message for the user."""


class ImageError(PyvmmError):
    """A guest image is truncated, oversized or malformed."""


class ConfigError(PyvmmError):
    """An option or machine configuration is invalid."""


class EngineUnavailable(PyvmmError):
    """The requested engine cannot run on this host (e.g. no /dev/kvm)."""


class GuestMemoryError(PyvmmError):
    """An access to guest-physical memory that no RAM/ROM region backs."""

    def __init__(self, gpa: int, length: int) -> None:
        super().__init__(f"guest-physical access of {length} byte(s) at {gpa:#x} "
                         "is outside guest memory")
        self.gpa = gpa
        self.length = length

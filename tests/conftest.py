"""Shared fixtures and skip conditions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests assert behaviour, never speed: hypothesis's default 200 ms deadline
# per example can fail them on a busy machine.
settings.register_profile("pyvmm", deadline=None)
settings.load_profile("pyvmm")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def kvm_skip_reason() -> str | None:
    """Why KVM tests cannot run here, or None when they can."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm is absent on this host"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not accessible to this user"
    try:
        from pyvmm.vm import engine_availability
    except ImportError as error:  # pragma: no cover - broken install
        return f"pyvmm import failed: {error}"
    ok, reason = engine_availability("kvm")
    return None if ok else reason


requires_kvm = pytest.mark.skipif(kvm_skip_reason() is not None,
                                  reason=str(kvm_skip_reason()))


def run_pyvmm(*args: str, timeout: float = 120, stdin=subprocess.DEVNULL):
    """Run `python -m pyvmm ARGS` as a user would (no terminal)."""
    return subprocess.run([sys.executable, "-m", "pyvmm", *args], capture_output=True,
                          timeout=timeout, stdin=stdin, cwd=ROOT)

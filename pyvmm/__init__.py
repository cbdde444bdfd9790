"""pyvmm: an x86 PC emulator and virtualizer in Python.

One virtual PC (pyvmm.board.pc.PcBoard), several engines that execute the
guest on it (pyvmm.engines: interp, jit, kvm).  See docs/ARCHITECTURE.md.
"""

__version__ = "0.1.0"

__all__ = ["Hypervisor", "__version__"]


def __getattr__(name: str) -> object:
    """`pyvmm.Hypervisor`, imported on first use (keeps `import pyvmm` light)."""
    if name == "Hypervisor":
        from pyvmm.hypervisor import Hypervisor

        return Hypervisor
    raise AttributeError(f"module 'pyvmm' has no attribute {name!r}")

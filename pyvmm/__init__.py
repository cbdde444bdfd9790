"""pyvmm: an x86 PC emulator and virtualizer in Python.

One virtual PC (pyvmm.board.pc.PcBoard), several engines that execute the
guest on it (pyvmm.engines: kvm, interp).  See docs/ARCHITECTURE.md.
"""

__version__ = "0.1.0"

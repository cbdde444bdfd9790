"""Debugging a guest: the GDB remote stub (docs/DEBUGGING.md).

rsp.py       GDB Remote Serial Protocol framing: packets, checksums, escapes.
registers.py The register layouts gdb sees (x86-64 and i386) and the target
             description XML, both from one table.
target.py    A stopped VM as gdb sees it: registers, guest-virtual memory,
             breakpoints, stepping and resuming on any emulating engine.
gdbstub.py   The TCP server and the packet dispatch table.
"""

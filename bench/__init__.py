"""pyvmm's benchmark suite (`python -m bench`, see bench/README.md).

Runs the bundled benchmark guests (guests/bench/) under every pyvmm engine
and, where installed, under QEMU and Bochs, and reports MIPS and ratios
against the fastest reference measured in the same session.
"""

"""Firmware tables pyvmm generates from the board's facts: ACPI (acpi.py, aml.py),
the MP table (mptable.py) and QEMU's fw_cfg table-loader script (loader.py)."""

"""bench/seabios_boot.py: what counts as SeaBIOS's boot step, and the table it writes."""

from __future__ import annotations

from pathlib import Path

from bench.seabios_boot import (
    DOC_BEGIN,
    DOC_END,
    BootResult,
    boot_step_line,
    format_markdown,
    update_doc,
)


def test_boot_step_is_the_first_complete_line() -> None:
    assert boot_step_line(b"SeaBIOS (version 1.16)\r\nBooting from Flo") is None
    assert boot_step_line(b"x\nBooting from Floppy...\r\nBoot failed\n") == "Booting from Floppy..."
    assert boot_step_line(b"No bootable device.  Retrying in 60 seconds.\n") == \
        "No bootable device.  Retrying in 60 seconds."
    assert boot_step_line(b"SeaBIOS (version 1.16)\n") is None


def test_doc_table_is_replaced_in_place(tmp_path: Path) -> None:
    doc = tmp_path / "PERF.md"
    doc.write_text("# Perf\n\nbefore\n")
    results = [BootResult("interp", 20.5, "Booting from Floppy...", ""),
               BootResult("qemu-kvm", None, "", "skipped: no usable /dev/kvm")]
    update_doc(doc, format_markdown(results, Path("/bios.bin")))
    update_doc(doc, format_markdown(results[:1], Path("/bios.bin")))
    text = doc.read_text()
    assert text.count(DOC_BEGIN) == 1 and text.count(DOC_END) == 1
    assert "| interp | 20.50 | Booting from Floppy... |  |" in text
    assert "qemu-kvm" not in text and text.startswith("# Perf\n\nbefore\n")

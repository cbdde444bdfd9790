"""The DSDT's PCI host bridge, PCI0, against the board: its _PRT (ACPI 6.4
§6.2.13) says where each PCI INTx pin in use arrives, and the virtio-pci
function's INTA# asserts the I/O APIC input the _PRT names; its _CRS (§6.2.2)
states the windows the bridge forwards, and the BARs the board's firmware-free
layout needs fit in them."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pyvmm.board.pc import PCI_MMIO_WINDOW, PcBoard
from pyvmm.board.virtio import VIRTIO_MMIO_BASE, VirtioSpec
from pyvmm.devices.ioapic import DEFAULT_BASE as IOAPIC_BASE
from pyvmm.firmware import aml
from pyvmm.firmware import resources as res
from pyvmm.firmware.acpi import build_dsdt


@pytest.fixture(scope="module")
def board():
    made = PcBoard(virtio=(VirtioSpec("rng", transport="pci"),))
    yield made
    made.close()


def test_the_prt_names_the_pin_the_board_drives(board):
    desc = board.platform_description()
    route = next(r for r in desc.pci_interrupts if r.device == 2)
    assert (route.device, route.pin, route.gsi) == (2, 0, 17)
    dsdt = build_dsdt(desc)
    assert aml.package(aml.integer(0x2FFFF), aml.integer(0), aml.integer(0),
                       aml.integer(17)) in dsdt
    board.virtio0.isr = 1
    board.virtio0.update_intx()
    assert board.ioapic.s.asserted == 1 << 17


@pytest.mark.skipif(shutil.which("iasl") is None,
                    reason="iasl is not installed (apt package acpica-tools)")
def test_iasl_reads_the_prt_and_the_crs(board, tmp_path):
    path = tmp_path / "dsdt.aml"
    path.write_bytes(build_dsdt(board.platform_description()))
    result = subprocess.run(["iasl", "-d", str(path)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result
    text = " ".join((tmp_path / "dsdt.dsl").read_text().split())
    count = len(board.platform_description().pci_interrupts)
    assert f"Name (_PRT, Package (0x{count:02X})" in text
    assert "0x0002FFFF, Zero, Zero, 0x11 }" in text
    assert ("WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0x0000, "
            "// Granularity 0x0000, // Range Minimum 0x00FF, // Range Maximum") in text
    assert "0x0D00, // Range Minimum 0xFFFF, // Range Maximum" in text
    first, last = PCI_MMIO_WINDOW
    assert (f"DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, "
            f"ReadWrite, 0x00000000, // Granularity 0x{first:08X}, // Range Minimum "
            f"0x{last:08X}, // Range Maximum") in text


def test_the_crs_forwards_every_bus_the_io_space_and_the_pci_window(board):
    dsdt = build_dsdt(board.platform_description())
    first, last = PCI_MMIO_WINDOW
    assert res.word_space(res.SPACE_BUS, 0, 0xFF) in dsdt
    # Every I/O port but configuration mechanism #1's own 0xCF8-0xCFF (PCI 3.0 §3.2.2.3.2).
    assert res.io_port(0xCF8, 8) in dsdt
    assert res.word_space(res.SPACE_IO, 0, 0xCF7, res.IO_RANGE_ENTIRE) in dsdt
    assert res.word_space(res.SPACE_IO, 0xD00, 0xFFFF, res.IO_RANGE_ENTIRE) in dsdt
    assert res.dword_memory(first, last) in dsdt
    # The window is above the largest RAM and below every fixed MMIO device.
    assert first >= board.ram_size and last < VIRTIO_MMIO_BASE < IOAPIC_BASE


def test_resource_template_is_a_buffer_ending_in_an_end_tag() -> None:
    body = res.io_port(0xCF8, 8)
    encoded = res.template(body)
    assert encoded[0] == aml.BUFFER_OP
    assert encoded.endswith(body + bytes([res.END_TAG, 0]))
    # The buffer's size integer counts the descriptors and the 2-byte end tag.
    assert aml.integer(len(body) + 2) in encoded[:6]

"""AML encodings from ACPI 6.4 §20 (and §19.6.35 EisaId)."""

from __future__ import annotations

import pytest

from pyvmm.firmware import aml


@pytest.mark.parametrize(("body", "encoded"), [
    (0, b"\x01"), (62, b"\x3f"),            # one byte: total < 64
    (63, b"\x41\x04"),                     # 65 = 0x41: lead 0x40 | 1, then 0x04
    (5000, b"\x8b\x38\x01"),               # 5003 = 0x138B over three bytes
])
def test_pkg_length(body: int, encoded: bytes) -> None:
    assert aml.pkg_length(body) == encoded


def test_name_strings() -> None:
    assert aml.name_string("\\_SB") == b"\\_SB_"
    assert aml.name_string("_SB.PCI0") == b"\x2e_SB_PCI0"
    assert aml.name_string("\\_SB.PCI0.ISA") == b"\\\x2f\x03_SB_PCI0ISA_"
    assert aml.name_string("^FOO") == b"^FOO_"
    with pytest.raises(ValueError):
        aml.name_string("TOOLONG")
    with pytest.raises(ValueError):
        aml.name_string("1ABC")


def test_integers_use_the_shortest_encoding() -> None:
    assert aml.integer(0) == b"\x00" and aml.integer(1) == b"\x01"
    assert aml.integer(2) == b"\x0a\x02"
    assert aml.integer(0x1234) == b"\x0b\x34\x12"
    assert aml.integer(0x12345678) == b"\x0c\x78\x56\x34\x12"
    assert aml.integer(1 << 40) == b"\x0e" + (1 << 40).to_bytes(8, "little")


def test_eisa_id_pnp0a03() -> None:
    """EisaId("PNP0A03") is the DWord 0x030AD041."""
    assert aml.eisa_id("PNP0A03") == b"\x0c" + (0x030AD041).to_bytes(4, "little")


def test_package_and_device() -> None:
    assert aml.package(aml.integer(0), aml.integer(5)) == b"\x12\x05\x02\x00\x0a\x05"
    assert aml.device("PCI0") == b"\x5b\x82\x05PCI0"
    assert aml.string("ab") == b"\x0dab\x00"

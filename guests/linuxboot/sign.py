"""Finish an option ROM assembled by nasm (BIOS Boot Specification 1.01, Appendix A).

    python3 sign.py IN OUT

Pads the image to whole 512-byte blocks (one spare byte at least), writes the
block count to offset 2, the PnP expansion header's checksum (its 32 bytes,
found through the word at 0x1A, sum to 0) and the ROM checksum (the last byte:
every byte of the ROM sums to 0).
"""

import sys

BLOCK = 512
PNP_POINTER = 0x1A
PNP_CHECKSUM = 0x09
PNP_LENGTH_UNITS = 0x05


def sign(rom: bytearray) -> bytearray:
    blocks = len(rom) // BLOCK + 1  # room for the checksum byte
    if blocks > 255:
        raise SystemExit(f"option ROM too large: {len(rom)} bytes")
    rom = rom.ljust(blocks * BLOCK, b"\0")
    rom[2] = blocks
    pnp = rom[PNP_POINTER] | rom[PNP_POINTER + 1] << 8
    if rom[pnp:pnp + 4] != b"$PnP":
        raise SystemExit(f"no $PnP header at {pnp:#x}")
    length = rom[pnp + PNP_LENGTH_UNITS] * 16
    rom[pnp + PNP_CHECKSUM] = 0
    rom[pnp + PNP_CHECKSUM] = -sum(rom[pnp:pnp + length]) & 0xFF
    rom[-1] = 0
    rom[-1] = -sum(rom) & 0xFF
    return rom


if __name__ == "__main__":
    source, target = sys.argv[1:]
    with open(source, "rb") as file:
        data = bytearray(file.read())
    with open(target, "wb") as file:
        file.write(sign(data))

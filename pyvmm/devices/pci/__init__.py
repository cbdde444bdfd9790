"""PCI: the configuration-space model, bus 0 with configuration mechanism #1,
and the i440FX/PIIX3/PIIX4 chipset functions of the PC board."""

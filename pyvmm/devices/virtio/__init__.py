"""Virtio 1.2 devices (OASIS "Virtual I/O Device (VIRTIO) Version 1.2").

spec.py     the numbers the specification fixes: status and feature bits,
            device IDs, descriptor flags.
queue.py    the split virtqueue (§2.7): descriptor chains read from guest
            memory, validated, used entries written back, event index.
device.py   VirtioDevice: what every device type shares (features, config
            space, queues, reset, DEVICE_NEEDS_RESET on a driver error).
blk.py, rng.py, console.py, net.py
            the device types (net's host backends: pyvmm/net/).
mmio.py     the virtio-mmio transport, version 2 (§4.2).
pci.py      the modern virtio-pci transport (§4.1): capabilities, one memory
            BAR, MSI-X (pyvmm/devices/pci/config.py) and INTx.

Devices are engine-neutral like every other device: plain-data state
(get_state/set_state) and guest memory through GuestMemory.
"""

"""Numbers fixed by the Virtio 1.2 specification, in one place."""

from __future__ import annotations

# Device status field (§2.1).
STATUS_ACKNOWLEDGE = 1
STATUS_DRIVER = 2
STATUS_DRIVER_OK = 4
STATUS_FEATURES_OK = 8
STATUS_DEVICE_NEEDS_RESET = 64
STATUS_FAILED = 128

# Reserved feature bits (§6).
F_INDIRECT_DESC = 1 << 28
F_EVENT_IDX = 1 << 29
F_VERSION_1 = 1 << 32

# Split virtqueue descriptor flags (§2.7.5) and ring flags (§2.7.6, §2.7.8).
DESC_F_NEXT = 1
DESC_F_WRITE = 2
DESC_F_INDIRECT = 4
AVAIL_F_NO_INTERRUPT = 1
USED_F_NO_NOTIFY = 1
MAX_QUEUE_SIZE = 32768  # §2.7: "Queue Size ... maximum 32768"

# Device IDs (§5).
DEVICE_NET = 1
DEVICE_BLOCK = 2
DEVICE_CONSOLE = 3
DEVICE_ENTROPY = 4

# virtio-mmio interrupt status bits (§4.2.2).
INTERRUPT_USED_BUFFER = 1
INTERRUPT_CONFIG_CHANGE = 2

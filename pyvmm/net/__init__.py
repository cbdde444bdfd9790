"""Host-side network backends for virtio-net: an Ethernet switch between the
VMs of one process (switch.py) and a host TAP device (tap.py)."""

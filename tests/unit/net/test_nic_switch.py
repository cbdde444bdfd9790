"""Two VMs' virtio-net NICs on one switch of a Network, driven by the test driver
(tests/unit/devices/virtio/driver.py) over each board's virtio-mmio window: frames
cross through the NIC -> switch port -> NIC hops on each VM's own event queue,
every hop's counters reach `vm.stats`, and a full port queue drops and counts."""

from __future__ import annotations

import pytest

from pyvmm.board.virtio import VirtioSpec
from pyvmm.devices.virtio.net import F_MAC, F_MRG_RXBUF, HEADER
from pyvmm.devices.virtio.spec import F_VERSION_1
from pyvmm.net.network import Network
from pyvmm.net.switch import QUEUE_LIMIT
from pyvmm.snapshot import restore_snapshot, take_snapshot
from pyvmm.vm import VirtualMachine
from tests.unit.devices.virtio.driver import Driver

LAN = VirtioSpec("net", {"netdev": "switch", "switch": "lan"}, "mmio")
HOP = "virtio0 switch lan"


def frame(destination: bytes, source: bytes, payload: bytes) -> bytes:
    return destination + source + b"\x88\xb5" + payload  # IEEE local experimental type


@pytest.fixture
def pair():
    network = Network()
    vms = [VirtualMachine(engine="interp", ram_size=8 << 20, name=f"vm{i}", vm_id=i,
                          virtio=(LAN,), network=network) for i in (1, 2)]
    drivers = []
    for vm in vms:
        driver = Driver(vm.board.devices["virtio0"], vm.board.memory)
        assert driver.init(features=F_VERSION_1 | F_MAC | F_MRG_RXBUF, queues=2, size=64)
        drivers.append(driver)
    yield network, vms, drivers
    for vm in vms:
        vm.close()


def mac_of(driver: Driver) -> bytes:
    return b"".join(driver.t.mmio_read(0x100 + i, 1).to_bytes(1, "little") for i in range(6))


def test_default_macs_come_from_the_vm_ids(pair):
    _, _, (a, b) = pair
    assert mac_of(a) == bytes.fromhex("525400000100")
    assert mac_of(b) == bytes.fromhex("525400000200")


def test_a_frame_crosses_to_the_other_vm_on_its_own_event_queue(pair):
    network, (vm1, vm2), (a, b) = pair
    mac_a, mac_b = mac_of(a), mac_of(b)
    heads = {}
    for _ in range(4):
        head = b.submit(0, [(1526, True)])
        heads[head] = b.last_addresses[0]
    sent = frame(mac_b, mac_a, bytes(range(256)) * 2)
    a.submit(1, [(bytes(HEADER) + sent, False)])
    assert a.used(1)  # transmitted
    assert b.used(0) == []  # not yet: the frame waits for vm2's own thread
    assert vm2.board.events.drain() == 1
    (head, length), = b.used(0)
    data = vm2.board.memory.read(heads[head], length)
    assert data[HEADER:] == sent and int.from_bytes(data[10:12], "little") == 1
    stats1, stats2 = vm1.stats, vm2.stats
    assert stats1.get("virtio-net", "frames sent") == 1
    assert stats1.get("net", f"{HOP}: frames sent into the switch") == 1
    assert stats2.get("net", f"{HOP}: frames queued for this port") == 1
    assert stats2.get("net", f"{HOP}: frames taken by the NIC") == 1
    assert stats2.get("virtio-net", "frames received") == 1
    # vm2 answers to the address it learnt: the switch forwards it to vm1 alone.
    reply_buffer = a.submit(0, [(1526, True)])
    b.submit(1, [(bytes(HEADER) + frame(mac_a, mac_b, b"pong"), False)])
    vm1.board.events.drain()
    (head, length), = a.used(0)
    assert head == reply_buffer
    assert vm1.board.memory.read(a.last_addresses[0], length)[HEADER + 14:] == b"pong"


def test_a_full_port_queue_drops_and_counts(pair):
    network, (vm1, vm2), (a, b) = pair
    mac_a, mac_b = mac_of(a), mac_of(b)
    # vm2 posts no receive buffers: its port queue fills, then the switch drops.
    extra = 40
    for n in range(QUEUE_LIMIT + extra):
        a.submit(1, [(bytes(HEADER) + frame(mac_b, mac_a, n.to_bytes(4, "big")), False)])
        a.used(1)
    vm2.board.events.drain()
    stats = vm2.stats
    assert stats.get("net", f"{HOP}: frames queued for this port") == QUEUE_LIMIT
    assert stats.get("net", f"{HOP}: frames dropped (port queue full)") == extra
    assert vm1.stats.get("virtio-net", "frames sent") == QUEUE_LIMIT + extra
    # Buffers posted later get the queued frames, oldest first (the posting is a
    # notification on vm2's receive queue, served at once).
    heads = {}
    for _ in range(3):
        head = b.submit(0, [(64, True)])
        heads[head] = b.last_addresses[0]
    got = [vm2.board.memory.read(heads[h], n)[HEADER + 14:] for h, n in b.used(0)]
    assert got == [n.to_bytes(4, "big") for n in range(3)]
    # The fourth waits in the NIC's backlog for the next buffer; the rest at the port.
    assert vm2.stats.get("net", f"{HOP}: frames taken by the NIC") == 4
    assert list(vm2.board.devices["virtio0"].device.backlog) == [
        frame(mac_b, mac_a, (3).to_bytes(4, "big"))]


def test_a_vm_alone_on_a_switch_runs_and_its_frames_go_nowhere():
    vm = VirtualMachine(engine="interp", ram_size=8 << 20, virtio=(LAN,))
    try:
        driver = Driver(vm.board.devices["virtio0"], vm.board.memory)
        assert driver.init(features=F_VERSION_1 | F_MAC, queues=2, size=16)
        driver.submit(1, [(bytes(HEADER) + frame(b"\xff" * 6, mac_of(driver), b"hi"), False)])
        assert driver.used(1)
        assert vm.stats.get("net", f"{HOP}: frames sent into the switch") == 1
    finally:
        vm.close()


def test_the_nic_moves_through_a_snapshot_with_its_mac(pair):
    network, (vm1, _), (a, _) = pair
    snapshot = take_snapshot(vm1)
    restored = restore_snapshot(snapshot, "interp", name="vm1b", network=network)
    try:
        spec, = restored.board.virtio_specs
        assert spec.options == {**LAN.options, "mac": "52:54:00:00:01:00"}
        device = restored.board.devices["virtio0"].device
        assert device.get_state() == vm1.board.devices["virtio0"].device.get_state()
        assert device.running
        assert restored.network.switches["lan"] is network.switches["lan"]
        assert len(network.switches["lan"].ports) == 3
    finally:
        restored.close()
    assert len(network.switches["lan"].ports) == 2  # closing a VM leaves its switch

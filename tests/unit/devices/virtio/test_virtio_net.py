"""virtio-net (Virtio 1.2 §5.1) between two VMs' devices through the learning
switch, and against a real TAP device in a network namespace made here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import pytest

from pyvmm.devices.virtio import mmio as regs
from pyvmm.devices.virtio.net import F_MAC, F_MRG_RXBUF, HEADER, RX_BACKLOG, VirtioNet
from pyvmm.devices.virtio.spec import F_VERSION_1
from pyvmm.machine.interrupts import IrqLine
from pyvmm.net.switch import EthernetSwitch
from tests.conftest import ROOT
from tests.unit.devices.virtio.driver import Driver, Sink, make_memory

MAC_A = bytes.fromhex("525400000001")
MAC_B = bytes.fromhex("525400000002")
BROADCAST = b"\xff" * 6


def frame(destination: bytes, source: bytes, payload: bytes) -> bytes:
    return destination + source + b"\x88\xb5" + payload  # local experimental ethertype


def nic(mac: bytes, switch: EthernetSwitch, features: int):
    memory = make_memory()
    holder = {}
    port = switch.attach(mac.hex(), notify=lambda: holder["drain"]())
    device = VirtioNet(memory, mac, port)
    transport = regs.VirtioMmio(device, IrqLine(Sink(), 6))
    driver = Driver(transport, memory)
    assert driver.init(features=features, queues=2, size=16)

    def drain() -> None:
        while (received := port.receive()) is not None:
            device.receive(received)
    holder["drain"] = drain
    return driver, device, memory


def received_frames(driver, memory, buffers):
    out = []
    for head, length in driver.used(0):
        out.append((head, memory.read(buffers[head], length)))
    return out


@pytest.mark.parametrize("merge", [False, True])
def test_frames_cross_the_switch(merge):
    features = F_VERSION_1 | F_MAC | (F_MRG_RXBUF if merge else 0)
    switch = EthernetSwitch()
    a, device_a, memory_a = nic(MAC_A, switch, features)
    b, device_b, memory_b = nic(MAC_B, switch, features)
    assert device_b.config_read(0, 6) == int.from_bytes(MAC_B, "little")
    # B posts receive buffers: 1 big without merging, 4 small ones with it.
    size = 64 if merge else 2048
    heads = {}
    for _ in range(4 if merge else 1):
        head = b.submit(0, [(size, True)])
        heads[head] = b.last_addresses[0]
    payload = bytes(range(200))
    a.submit(1, [(bytes(HEADER) + frame(MAC_B, MAC_A, payload), False)])
    assert a.used(1)  # transmitted and returned
    got = b.used(0)
    data = b"".join(memory_b.read(heads[head], length) for head, length in got)
    assert data[HEADER:] == frame(MAC_B, MAC_A, payload)
    num_buffers = int.from_bytes(data[10:12], "little")
    assert num_buffers == (len(got) if merge else 1)
    assert len(got) == ((HEADER + 216 + 63) // 64 if merge else 1)


def test_receive_backlog_is_bounded():
    switch = EthernetSwitch(queue_limit=10_000)
    a, _, _ = nic(MAC_A, switch, F_VERSION_1 | F_MAC)
    _, device_b, _ = nic(MAC_B, switch, F_VERSION_1 | F_MAC)  # posts no buffers
    for _ in range(RX_BACKLOG + 50):
        device_b.receive(frame(MAC_B, MAC_A, b"x"))
    assert len(device_b.backlog) == RX_BACKLOG
    assert device_b.stats.counters["virtio-net"]["frames dropped (receive backlog full)"] == 50


def test_switch_learns_and_bounds_queues():
    switch = EthernetSwitch(queue_limit=2)
    p1, p2, p3 = (switch.attach(str(i)) for i in range(3))
    p1.send(frame(BROADCAST, MAC_A, b"hello"))  # flooded: learns A on p1
    assert p2.receive() and p3.receive() and p1.receive() is None
    p2.send(frame(MAC_A, MAC_B, b"to a"))  # A is known: only p1
    assert p1.receive()[14:] == b"to a" and p3.receive() is None
    for _ in range(5):
        p2.send(frame(MAC_A, MAC_B, b"flood"))
    assert p1.counters.dropped == 3


TAP_SCRIPT = """
import sys, time, subprocess
sys.path.insert(0, sys.argv[1])
from pyvmm.net.tap import TapBackend
frames = []
tap = TapBackend("pvtap0")
subprocess.run(["ip", "link", "set", "pvtap0", "up"], check=True)
subprocess.run(["ip", "addr", "add", "10.99.0.1/24", "dev", "pvtap0"], check=True)
guest_mac = bytes.fromhex("525400123456")
# ARP who-has 10.99.0.1 tell 10.99.0.2 (RFC 826), as a guest would send it.
arp = (b"\\xff" * 6 + guest_mac + b"\\x08\\x06" + bytes.fromhex("0001080006040001") + guest_mac
       + bytes([10, 99, 0, 2]) + bytes(6) + bytes([10, 99, 0, 1]))
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    tap.send(arp)
    time.sleep(0.2)
    while (got := tap.receive()) is not None:
        frames.append(got)
    replies = [f for f in frames if f[12:14] == b"\\x08\\x06" and f[20:22] == b"\\x00\\x02"]
    if replies:
        print("arp reply to", replies[0][0:6].hex(), "from", ".".join(map(str, replies[0][28:32])))
        break
tap.close()
"""


def test_tap_backend_talks_to_the_host_stack(tmp_path):
    if os.geteuid() != 0 or shutil.which("ip") is None or not os.path.exists("/dev/net/tun"):
        pytest.skip("needs root, iproute2 and /dev/net/tun to make a TAP in a namespace")
    namespace = f"pyvmm-test-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", namespace], capture_output=True, text=True)
    if made.returncode:
        pytest.skip(f"cannot create a network namespace here: {made.stderr.strip()}")
    try:
        script = tmp_path / "tap.py"
        script.write_text(TAP_SCRIPT)
        done = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, str(script),
                               str(ROOT)], capture_output=True, text=True, timeout=60)
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)
    assert done.stdout.strip() == "arp reply to 525400123456 from 10.99.0.1", done.stderr

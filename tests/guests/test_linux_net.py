"""Linux over virtio-net: two VMs of one hypervisor ping each other through its
switch, and one VM pings a host TAP in a network namespace made here.

The NICs are virtio-net-device (virtio-mmio, found from the virtio_mmio.device=
option pyvmm appends): ISA IRQ 5, no PCI interrupt routing involved.  Each
guest runs its commands from `pyvmm_run=` (guests/linux/init) and powers off.

The two VMs boot at once under one hypervisor (jit, time-sliced on one host
thread), so neither knows when the other is up: each first pings until its
peer answers once, then runs `ping -c 3` and stays up a while so the peer's
own three pings find it.  Guest time is each VM's own (it advances with the
instructions it runs, and an idle guest's clock jumps to its next timer), so
the margins are guest seconds, not host seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid

import pytest

from pyvmm.machine.stop import StopKind
from tests.conftest import ROOT, run_pyvmm
from tests.guests.test_linux import ENGINE_SKIPS, needs_guest

CMDLINE = "console=ttyS0 nolapic noapic noxsave"
# The peer answers once, then three counted pings; then stay up for the peer's.
PING = ("ip link set eth0 up && ip addr add {me}/24 dev eth0 && "
        "until ping -c 1 -W 1 {peer} >/dev/null; do :; done && ping -c 3 {peer}; "
        "status=$?; sleep 20; exit $status")
SOFTWARE_SKIP = ENGINE_SKIPS["jit"]
needs_software_linux = pytest.mark.skipif(SOFTWARE_SKIP is not None,
                                          reason=str(SOFTWARE_SKIP))


def _vm(name: str, me: str, peer: str) -> str:
    command = PING.format(me=me, peer=peer)
    return f"""
[[vm]]
name = "{name}"
guest = "linux"
memory = "128M"
append = '{CMDLINE} pyvmm_run="{command}"'
netdev = "switch,id=n0,name=lan"
device = "virtio-net-device,netdev=n0"
"""


@needs_guest
@needs_software_linux
@pytest.mark.timeout(3600)
def test_two_linux_vms_ping_each_other_through_the_switch(tmp_path):
    config = tmp_path / "two.toml"
    config.write_text('[hypervisor]\nengine = "jit"\ntimeout = 3000\n'
                      + _vm("a", "10.0.0.1", "10.0.0.2") + _vm("b", "10.0.0.2", "10.0.0.1"))
    result = run_pyvmm("hypervisor", str(config), "--stats", timeout=3300)
    out, err = result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
    for name, peer in (("a", "10.0.0.2"), ("b", "10.0.0.1")):
        lines = [line for line in out.splitlines() if line.startswith(f"[{name}] ")]
        text = "\n".join(lines)
        assert re.search(rf"64 bytes from {re.escape(peer)}: seq=\d+ ttl=64", text), text[-3000:]
        assert "3 packets transmitted, 3 packets received, 0% packet loss" in text, \
            text[-3000:]
        assert "pyvmm-linux: command exited with status 0" in text, text[-3000:]
    assert result.returncode == StopKind.POWER_OFF.exit_code, err[-3000:]
    # Each VM's --stats: the NIC and its switch port moved frames both ways
    # (ARP and at least 4 echo requests and replies each way), none dropped.
    for section in err.split("== ")[1:]:
        counters = dict(re.findall(r"^  (.+?)\s+(\d+)$", section, re.M))
        for key in ("frames sent", "frames received"):
            assert int(counters.get(key, 0)) >= 5, section
        for key in ("virtio0 switch lan: frames sent into the switch",
                    "virtio0 switch lan: frames queued for this port",
                    "virtio0 switch lan: frames taken by the NIC"):
            assert int(counters.get(key, 0)) >= 5, section
        assert "dropped" not in " ".join(k for k, v in counters.items() if int(v)), section


def _namespace_skip() -> str | None:
    if os.geteuid() != 0 or shutil.which("ip") is None or not os.path.exists("/dev/net/tun"):
        return "needs root, iproute2 and /dev/net/tun to make a TAP in a network namespace"
    return None


@needs_guest
@needs_software_linux
@pytest.mark.timeout(3600)
def test_linux_pings_a_host_tap_in_a_network_namespace():
    skip = _namespace_skip()
    if skip is not None:
        pytest.skip(skip)
    namespace = f"pyvmm-net-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", namespace], capture_output=True, text=True)
    if made.returncode:
        pytest.skip(f"cannot create a network namespace here: {made.stderr.strip()}")
    try:
        def inside(*command: str) -> None:
            subprocess.run(["ip", "netns", "exec", namespace, *command], check=True,
                           capture_output=True)
        inside("ip", "tuntap", "add", "dev", "pvtap0", "mode", "tap")
        inside("ip", "addr", "add", "10.77.0.1/24", "dev", "pvtap0")
        inside("ip", "link", "set", "pvtap0", "up")
        command = ("ip link set eth0 up && ip addr add 10.77.0.2/24 dev eth0 && "
                   "until ping -c 1 -W 1 10.77.0.1 >/dev/null; do :; done && "
                   "ping -c 3 10.77.0.1")
        result = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, "-m", "pyvmm", "run",
             "--engine", "jit", "-m", "128M", "linux",
             "--netdev", "tap,id=n0,ifname=pvtap0", "--device", "virtio-net-device,netdev=n0",
             "--append", f'{CMDLINE} pyvmm_run="{command}"', "--timeout", "3000", "--stats"],
            capture_output=True, timeout=3300, cwd=ROOT)
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)
    out, err = result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
    assert re.search(r"64 bytes from 10\.77\.0\.1: seq=\d+ ttl=64", out), out[-3000:]
    assert "3 packets transmitted, 3 packets received, 0% packet loss" in out, out[-3000:]
    assert result.returncode == StopKind.POWER_OFF.exit_code, err[-3000:]
    counters = dict(re.findall(r"^  (.+?)\s+(\d+)$", err, re.M))
    assert int(counters["virtio0 tap pvtap0: frames sent to the host"]) >= 4, err[-2000:]
    assert int(counters["virtio0 tap pvtap0: frames from the host"]) >= 4, err[-2000:]

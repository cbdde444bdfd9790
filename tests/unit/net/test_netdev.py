"""The network options (pyvmm/net/netdev.py) and their one-line errors through the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from pyvmm.board.virtio import VirtioSpec, virtio_specs, with_default_macs
from pyvmm.errors import ConfigError
from pyvmm.hypervisor import configs_from_toml
from pyvmm.net.netdev import (
    Netdev,
    default_mac,
    parse_mac,
    parse_netdev,
    parse_nic,
    parse_nic_text,
)
from tests.conftest import ROOT, run_pyvmm


def test_netdev_spellings():
    assert parse_netdev("tap,id=n0,ifname=tap0") == Netdev("tap", "n0", "tap0")
    assert parse_netdev("switch,id=lan0,name=lan") == Netdev("switch", "lan0", "lan")


@pytest.mark.parametrize("text, words", [
    ("user,id=n0", "unknown type 'user'"),
    ("tap,ifname=tap0", "needs id="),
    ("switch,id=n0", "needs name="),
    ("tap,id=n0,ifname=a-very-long-name0", "longer than 15 bytes"),
    ("tap,id=n0,ifname=tap0,script=no", "unknown option(s) script"),
    ("switch,id=n0,name=lan,id=n1", "id= given twice"),
])
def test_bad_netdevs(text, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse_netdev(text)


def test_mac_addresses():
    assert parse_mac("52:54:00:AB:cd:01") == bytes.fromhex("525400abcd01")
    for bad in ("52:54:00:ab:cd", "52-54-00-ab-cd-01", "52:54:00:ab:cd:zz", "525400abcd01"):
        with pytest.raises(ConfigError, match="six hexadecimal octets"):
            parse_mac(bad)
    with pytest.raises(ConfigError, match="multicast"):
        parse_mac("01:00:5e:00:00:01")


def test_default_mac_is_locally_administered_and_unique_per_vm_and_nic():
    macs = {default_mac(vm, nic) for vm in range(0, 300, 7) for nic in range(3)}
    assert len(macs) == len(range(0, 300, 7)) * 3
    for mac in macs:
        first = parse_mac(mac)[0]
        assert first & 0x02 and not first & 0x01  # U/L bit set, I/G bit clear
    assert default_mac(2, 0) == "52:54:00:00:02:00"


def test_nics_resolve_their_netdevs_in_command_line_order():
    rng = VirtioSpec("rng")
    specs = virtio_specs(
        [], [parse_nic_text("virtio-net-device,netdev=b"), rng,
             parse_nic_text("virtio-net-pci,netdev=a,mac=52:54:00:00:00:AA")],
        [parse_netdev("tap,id=a,ifname=tap7"), parse_netdev("switch,id=b,name=lan")],
        [parse_nic("switch,name=wan,model=virtio-net-device")])
    assert specs == (
        VirtioSpec("net", {"netdev": "switch", "switch": "lan"}, "mmio"), rng,
        VirtioSpec("net", {"netdev": "tap", "ifname": "tap7", "mac": "52:54:00:00:00:aa"},
                   "pci"),
        VirtioSpec("net", {"netdev": "switch", "switch": "wan"}, "mmio"))
    filled = with_default_macs(specs, 5)
    assert [s.options.get("mac") for s in filled] == [
        "52:54:00:00:05:00", None, "52:54:00:00:00:aa", "52:54:00:00:05:02"]


@pytest.mark.parametrize("devices, netdevs, words", [
    (["virtio-net-pci,netdev=x"], ["switch,id=y,name=lan"], "no --netdev with that id"),
    ([], ["switch,id=y,name=lan"], "given to no NIC"),
    (["virtio-net-pci,netdev=y", "virtio-net-pci,netdev=y"], ["switch,id=y,name=lan"],
     "given to two NICs"),
    (["virtio-net-pci,netdev=y"], ["switch,id=y,name=a", "switch,id=y,name=b"],
     "two netdevs have id=y"),
])
def test_nic_wiring_errors(devices, netdevs, words):
    with pytest.raises(ConfigError, match=words):
        virtio_specs([], [parse_nic_text(d) for d in devices],
                     [parse_netdev(n) for n in netdevs], [])


def test_two_nics_with_one_mac_are_refused():
    spec = VirtioSpec("net", {"netdev": "switch", "switch": "lan", "mac": "52:54:00:00:00:01"})
    with pytest.raises(ConfigError, match="two NICs have mac=52:54:00:00:00:01"):
        with_default_macs((spec, spec), 1)


@pytest.mark.parametrize("args, words", [
    (["--netdev", "switch,id=n0,name=lan", "--device", "virtio-net-pci,netdev=n1"],
     b"--device netdev=n1: no --netdev with that id (netdev ids: n0)"),
    (["--netdev", "switch,id=n0,name=lan", "--device", "virtio-net-pci,netdev=n0,mac=1:2"],
     b"mac=1:2: expected six hexadecimal octets"),
    (["--netdev", "bridge,id=n0"], b"unknown type 'bridge'"),
    (["--device", "virtio-net-pci"], b"needs netdev=ID"),
    (["--nic", "tap,ifname=t0,model=e1000"], b"--nic model=e1000"),
])
def test_cli_errors_are_one_line(args, words):
    result = run_pyvmm("run", "hello", *args, timeout=60)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr, result.stderr
    assert result.stderr.count(b"\n") == 1, result.stderr


@pytest.mark.skipif(shutil.which("setpriv") is None or not os.path.exists("/dev/net/tun"),
                    reason="needs setpriv (util-linux) and /dev/net/tun")
def test_tap_without_cap_net_admin_is_one_line():
    """Without CAP_NET_ADMIN (dropped from the bounding set, so not even root has it
    after exec) TUNSETIFF fails with EPERM (tuntap.rst); pyvmm names the capability."""
    drop = ["setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin"] \
        if os.geteuid() == 0 else []  # a user without it already lacks it
    result = subprocess.run(
        [*drop, sys.executable,
         "-m", "pyvmm", "run", "hello", "--netdev", "tap,id=n0,ifname=pyvmmnope0",
         "--device", "virtio-net-pci,netdev=n0"],
        capture_output=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (b"pyvmm: error: netdev tap,ifname=pyvmmnope0: Operation not "
                             b"permitted (creating a TAP, or attaching to another user's, "
                             b"needs CAP_NET_ADMIN)\n")


def test_toml_takes_the_same_strings():
    configs, _ = configs_from_toml("""
[[vm]]
guest = "hello"
count = 2
netdev = "switch,id=n0,name=lan"
device = ["virtio-net-device,netdev=n0"]
nic = "switch,name=wan"
""")
    assert len(configs) == 2
    assert configs[0].virtio == (
        VirtioSpec("net", {"netdev": "switch", "switch": "lan"}, "mmio"),
        VirtioSpec("net", {"netdev": "switch", "switch": "wan"}, "pci"))
    assert configs[1].virtio == configs[0].virtio  # MACs come from each VM's id


@pytest.mark.parametrize("entry, words", [
    ('netdev = "tap,id=n0,ifname=t0"\ndevice = "virtio-net-pci,netdev=n0"\ncount = 2',
     "a TAP is one VM's"),
    ('device = "virtio-net-pci,netdev=zz"', "no --netdev with that id"),
    ("netdev = 5", "netdev must be a string or a list of strings"),
    ('device = "virtio-rng-pci"', "not a NIC"),
])
def test_toml_errors(entry, words):
    with pytest.raises(ConfigError, match=words):
        configs_from_toml(f'[[vm]]\nguest = "hello"\n{entry}\n')

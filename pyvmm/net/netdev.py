"""The network options, in QEMU's spelling, checked before anything runs.

- `--netdev tap,id=ID,ifname=NAME`: a host TAP interface (tap.py);
- `--netdev switch,id=ID,name=NAME`: a port on the learning switch NAME of
  this process (switch.py; in `pyvmm hypervisor` every VM naming the same
  switch is on it);
- `--device virtio-net-pci,netdev=ID[,mac=MAC]` and
  `--device virtio-net-device,netdev=ID[,mac=MAC]` (virtio-mmio), QEMU's
  device names; `--nic tap,ifname=NAME[,model=virtio][,mac=MAC]` and
  `--nic switch,name=NAME,...`, QEMU's shorthand for a netdev and its NIC.

A NIC's backend is resolved here into plain options (`nic_options`), so
that the device's description in a snapshot names what it was plugged
into.  A NIC with no `mac=` gets `default_mac(vm_id, index)`: QEMU's
52:54:00 prefix, whose first octet has the locally administered bit (IEEE
802-2014 §8.2.2, U/L bit) set and the group bit clear.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyvmm.errors import ConfigError

# netdev kind -> the option naming what it attaches to.
NETDEV_TARGETS = {"tap": "ifname", "switch": "name"}
# --device NIC names -> transport ("pci" or "mmio"); QEMU's: -pci the PCI
# function, -device the virtio-mmio one, the bare name the PC's default.
NIC_MODELS = {"virtio-net-pci": "pci", "virtio-net": "pci", "virtio-net-device": "mmio"}
# --nic model= values -> the --device name they stand for.
NIC_SHORTHAND_MODELS = {"virtio": "virtio-net-pci", "virtio-net-pci": "virtio-net-pci",
                        "virtio-net-device": "virtio-net-device"}
MAC_PREFIX = bytes.fromhex("525400")
MAX_ID = 64


@dataclass(frozen=True)
class Netdev:
    """One `--netdev`: what a NIC naming `id` is plugged into."""

    kind: str  # a key of NETDEV_TARGETS
    id: str
    target: str  # the TAP's ifname or the switch's name


def _pairs(text: str, what: str) -> tuple[str, dict[str, str]]:
    """'head,key=value,...' -> (head, {key: value}); one-line errors."""
    head, *items = text.split(",")
    options: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"{what} {text!r}: {item!r} is not KEY=VALUE")
        if key in options:
            raise ConfigError(f"{what} {text!r}: {key}= given twice")
        options[key] = value
    return head, options


def _check_name(value: str, what: str) -> str:
    if len(value) > MAX_ID or not value.isprintable():
        raise ConfigError(f"{what} {value!r}: at most {MAX_ID} printable characters")
    return value


def parse_netdev(text: str) -> Netdev:
    """`tap,id=ID,ifname=NAME` or `switch,id=ID,name=NAME`."""
    kind, options = _pairs(text, "--netdev")
    if kind not in NETDEV_TARGETS:
        raise ConfigError(f"--netdev {text!r}: unknown type {kind!r} (pyvmm has "
                          f"{', '.join(NETDEV_TARGETS)})")
    target = NETDEV_TARGETS[kind]
    unknown = set(options) - {"id", target}
    if unknown:
        raise ConfigError(f"--netdev {kind}: unknown option(s) {', '.join(sorted(unknown))} "
                          f"(it takes id= and {target}=)")
    for key in ("id", target):
        if key not in options:
            raise ConfigError(f"--netdev {text!r}: needs {key}=")
    if kind == "tap" and len(options[target].encode()) > 15:
        raise ConfigError(f"--netdev tap: ifname {options[target]!r} is longer than 15 bytes "
                          "(IFNAMSIZ)")
    return Netdev(kind, _check_name(options["id"], "netdev id"),
                  _check_name(options[target], f"netdev {kind} {target}"))


def parse_mac(text: str) -> bytes:
    """'52:54:00:12:34:56' -> 6 bytes; a multicast (group) address is refused."""
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ConfigError(f"mac={text}: expected six hexadecimal octets like 52:54:00:12:34:56")
    try:
        mac = bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ConfigError(f"mac={text}: expected six hexadecimal octets like "
                          "52:54:00:12:34:56") from None
    if mac[0] & 1:
        raise ConfigError(f"mac={text}: a multicast address (first octet odd) cannot be a "
                          "NIC's own")
    return mac


def format_mac(mac: bytes) -> str:
    return ":".join(f"{octet:02x}" for octet in mac)


def default_mac(vm_id: int, index: int) -> str:
    """52:54:00:VV:VV:NN: the VM's id (16 bits) and the NIC's index (8 bits)."""
    if not 0 <= vm_id < 1 << 16 or not 0 <= index < 1 << 8:
        raise ConfigError(f"no default MAC for NIC {index} of VM {vm_id}: give mac=")
    return format_mac(MAC_PREFIX + vm_id.to_bytes(2, "big") + bytes([index]))


@dataclass(frozen=True)
class NicRequest:
    """One `--device virtio-net-*` before its netdev is looked up."""

    transport: str
    netdev: str | None  # the netdev id; None for a --nic (netdev given inline)
    mac: str | None
    inline: Netdev | None = None


def parse_nic_device(name: str, options: dict[str, str]) -> NicRequest:
    """`--device virtio-net-pci,netdev=ID[,mac=MAC]` (name already split off)."""
    unknown = set(options) - {"netdev", "mac"}
    if unknown:
        raise ConfigError(f"--device {name}: unknown option(s) {', '.join(sorted(unknown))} "
                          "(it takes netdev= and mac=)")
    if "netdev" not in options:
        raise ConfigError(f"--device {name}: needs netdev=ID (a --netdev's id)")
    mac = options.get("mac")
    if mac is not None:
        mac = format_mac(parse_mac(mac))
    return NicRequest(NIC_MODELS[name], options["netdev"], mac)


def parse_nic_text(text: str) -> NicRequest:
    """`virtio-net-pci,netdev=ID[,mac=MAC]` as one string (the TOML's device =)."""
    name, options = _pairs(text, "device")
    if name not in NIC_MODELS:
        raise ConfigError(f"device {name!r}: not a NIC (NICs: {', '.join(NIC_MODELS)})")
    return parse_nic_device(name, options)


def parse_nic(text: str) -> NicRequest:
    """`--nic tap,ifname=NAME[,model=virtio][,mac=MAC]` (or `switch,name=NAME,...`)."""
    kind, options = _pairs(text, "--nic")
    model = options.pop("model", "virtio")
    if model not in NIC_SHORTHAND_MODELS:
        raise ConfigError(f"--nic model={model}: pyvmm has {', '.join(NIC_SHORTHAND_MODELS)}")
    mac = options.pop("mac", None)
    if mac is not None:
        mac = format_mac(parse_mac(mac))
    rest = ",".join([kind, *(f"{k}={v}" for k, v in options.items())])
    netdev = parse_netdev(rest if "id" in options else rest + ",id=nic")
    return NicRequest(NIC_MODELS[NIC_SHORTHAND_MODELS[model]], None, mac, netdev)


def resolve_nics(netdevs: list[Netdev], requests: list[NicRequest]) -> list[tuple[str, dict]]:
    """Each NIC's (transport, options): its netdev looked up by id and written
    into the options (`netdev`, and `ifname` or `switch`, and `mac` if given)."""
    by_id: dict[str, Netdev] = {}
    for netdev in netdevs:
        if netdev.id in by_id:
            raise ConfigError(f"two netdevs have id={netdev.id}")
        by_id[netdev.id] = netdev
    used: set[str] = set()
    out = []
    for request in requests:
        netdev = request.inline
        if netdev is None:
            netdev = by_id.get(request.netdev or "")
            if netdev is None:
                known = ", ".join(sorted(by_id)) or "none given"
                raise ConfigError(f"--device netdev={request.netdev}: no --netdev with that "
                                  f"id (netdev ids: {known})")
            if netdev.id in used:
                raise ConfigError(f"netdev {netdev.id} is given to two NICs (one each)")
            used.add(netdev.id)
        options = {"netdev": netdev.kind,
                   NETDEV_OPTION[netdev.kind]: netdev.target}
        if request.mac is not None:
            options["mac"] = request.mac
        out.append((request.transport, options))
    unused = sorted(set(by_id) - used)
    if unused:
        raise ConfigError(f"--netdev id={unused[0]} is given to no NIC (--device "
                          f"virtio-net-pci,netdev={unused[0]})")
    return out


# netdev kind -> the NIC option naming its backend (in snapshots too).
NETDEV_OPTION = {"tap": "ifname", "switch": "switch"}

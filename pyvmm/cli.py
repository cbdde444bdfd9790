"""`pyvmm` command line: run a guest on the virtual PC under a chosen engine."""

from __future__ import annotations

import argparse
import difflib
import math
import os
import sys
from pathlib import Path
from typing import NoReturn

from pyvmm.errors import EngineUnavailable, PyvmmError
from pyvmm.machine.stop import StopKind, StopReason

MIB = 1 << 20

EXIT_USAGE = 2
EXIT_ENGINE_UNAVAILABLE = 18
EXIT_INTERRUPTED = 130

# (status, meaning) rows of `pyvmm run --help`.
_EXIT_STATUSES: tuple[tuple[str, str], ...] = (
    ("(v << 1) | 1", "the guest wrote v to the debug-exit port 0xF4 (always odd)"),
    ("0", "you quit with Ctrl-A x"),
    (str(EXIT_USAGE), "bad option, bad or missing image"),
    (str(StopKind.TIMEOUT.exit_code), "--timeout expired"),
    (str(StopKind.TRIPLE_FAULT.exit_code),
     "the guest triple-faulted (CPU shutdown; e.g. an exception with no usable IDT)"),
    (str(StopKind.HALTED.exit_code), "the guest halted with interrupts disabled"),
    (str(StopKind.INTERNAL_ERROR.exit_code), "internal error (KVM entry failure, pyvmm bug)"),
    (str(StopKind.RESET.exit_code), "the guest asked for a reset (port 0x64, 0x92 or 0xCF9) "
     "that did not restart it: --no-reboot, or no BIOS to restart"),
    (str(EXIT_ENGINE_UNAVAILABLE), "the engine cannot run on this host (e.g. no /dev/kvm)"),
    (str(StopKind.UNMAPPED_ACCESS.exit_code), "the guest touched unmapped memory (--unmapped)"),
    (str(StopKind.OUTPUT_LIMIT.exit_code), "a VM of --vms/hypervisor exceeded its console budget"),
    (str(StopKind.OUTPUT_CLOSED.exit_code), "stdout was closed by its reader (e.g. | head -1)"),
    (str(StopKind.POWER_OFF.exit_code), "the guest powered off (ACPI S5 through PM1 control)"),
    (str(StopKind.REPLAY_DIVERGED.exit_code), "--replay: the guest did not follow the recording"),
    (str(EXIT_INTERRUPTED), "interrupted by a signal (Ctrl-C without a terminal console)"),
)
EXIT_STATUS_HELP = ("exit status:\n"
                    + "".join(f"  {code:<16}  {meaning}\n" for code, meaning in _EXIT_STATUSES)
                    + "The reason a VM stopped is printed on stderr.  A guest stops with\n"
                    "the same status under every engine (tests/guests/test_stop_parity.py).\n")


def parse_size(text: str) -> int:
    """QEMU-style sizes: 64M, 1G, 512K; a bare number is MiB."""
    from pyvmm.units import parse_size as parse

    try:
        return parse(text, MIB)
    except ValueError:
        if text.strip().startswith("-"):
            raise argparse.ArgumentTypeError(f"{text!r}: a size cannot be negative") from None
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (examples: 64M, 1G)") from None


def positive_float(text: str) -> float:
    """A number of seconds: finite, positive, at most MAX_RUN_SECONDS."""
    from pyvmm.units import MAX_RUN_SECONDS, valid_seconds

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if math.isnan(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    if not valid_seconds(value):
        if value > MAX_RUN_SECONDS:
            raise argparse.ArgumentTypeError(
                f"{text!r} is too large (at most {MAX_RUN_SECONDS:g})")
        raise argparse.ArgumentTypeError("must be positive")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _add_guest_options(parser: argparse.ArgumentParser, with_engine: bool = True,
                       append_many: bool = False) -> None:
    from pyvmm.boot.registry import IMAGE_OPTIONS
    from pyvmm.engines.registry import DEFAULT_ENGINE, ENGINES
    from pyvmm.guests import BUILT_GUESTS, BUNDLED_GUESTS

    parser.add_argument("guest", nargs="?", metavar="GUEST",
                        help="a bundled guest (" + ", ".join([*BUNDLED_GUESTS, *BUILT_GUESTS])
                             + "; "
                             "guests/README.md); or use one of the image options below")
    image = parser.add_argument_group("image (exactly one, or a bundled GUEST)")
    for option in IMAGE_OPTIONS:
        image.add_argument(option.flag, metavar="FILE", type=Path, help=option.help)
        if option.flag == "--kernel":
            image.add_argument("--initrd", metavar="FILE", type=Path,
                               help="initial ramdisk for a Linux --kernel (as QEMU's -initrd)")
            from pyvmm.boot.linux import ENTRY_64, LINUX_ENTRIES

            image.add_argument(
                "--linux-entry", choices=list(LINUX_ENTRIES), default=None,
                help="how a Linux bzImage starts: "
                     + "; ".join(f"{name}: {what}" for name, what in LINUX_ENTRIES.items())
                     + f" (default: {ENTRY_64}; a vmlinux ELF is always entered directly). "
                       "decompressed saves an xz kernel's billions of decompressor "
                       "instructions under interp and jit")
    if append_many:  # compare: one column per engine and command line
        image.add_argument("--append", metavar="TEXT", default=None, action="append",
                           help="kernel command line (for --kernel, linux and the demo guest); "
                                "give it more than once to compare command lines too")
    else:
        image.add_argument("--append", metavar="TEXT", default=None,
                           help="kernel command line (for --kernel, linux and the demo guest)")
    machine = parser.add_argument_group("machine")
    if with_engine:
        machine.add_argument("--engine", choices=sorted(ENGINES), default=DEFAULT_ENGINE,
                             help=f"who executes guest code (default: {DEFAULT_ENGINE})")
    machine.add_argument("-m", "--memory", type=parse_size, default=64 * MIB, metavar="SIZE",
                         help="guest RAM, e.g. 64M or 1G (default: 64M)")
    machine.add_argument("--unmapped", choices=("stop", "ignore"), default="stop",
                         help="a guest access (data or instruction fetch) to physical "
                              "memory above 1 MiB that is neither RAM nor a device: stop "
                              "the VM and say where (default, status 20 under every "
                              "engine), or ignore it (reads return all ones, as on a PC's "
                              "open bus). What no RAM or ROM backs in the hole at "
                              "0xA0000-0xFFFFF always reads all ones: code run there is "
                              "FF FF, #UD")


def parse_drive(text: str):  # noqa: ANN201 - a VirtioSpec
    """--drive file=PATH[,format=raw][,readonly=on|off][,if=virtio|virtio-mmio][,cache=...]
    (QEMU's -drive spelling, the options pyvmm has)."""
    from pyvmm.board.virtio import VirtioSpec

    options: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"{item!r}: expected KEY=VALUE")
        if key not in DRIVE_OPTIONS:
            raise argparse.ArgumentTypeError(f"unknown drive option {key!r} (pyvmm knows "
                                             f"{', '.join(DRIVE_OPTIONS)})")
        if value not in DRIVE_OPTIONS[key] and DRIVE_OPTIONS[key]:
            raise argparse.ArgumentTypeError(f"{key}={value}: expected "
                                             f"{' or '.join(DRIVE_OPTIONS[key])}")
        options[key] = value
    if "file" not in options:
        raise argparse.ArgumentTypeError("a drive needs file=PATH")
    options.pop("format", None)
    return VirtioSpec("blk", options, DRIVE_INTERFACES[options.pop("if", "virtio")])


# --drive if= values -> transport (QEMU's: if=virtio is virtio-blk-pci on a PC).
DRIVE_INTERFACES = {"virtio": "pci", "virtio-mmio": "mmio"}
# --drive keys -> the values pyvmm accepts (empty: any).
DRIVE_OPTIONS: dict[str, tuple[str, ...]] = {
    "file": (), "format": ("raw",), "if": tuple(DRIVE_INTERFACES),
    "readonly": ("on", "off"), "cache": ("writeback", "none"), "serial": (),
}
# --device names -> (virtio kind, transport).  QEMU's spelling: "-pci" is the
# PCI function, "-device" the virtio-mmio one, and the bare name the PC's
# default, PCI (QEMU's alias); virtio-console and virtconsole are hvc0.
DEVICE_NAMES: dict[str, tuple[str, str]] = {
    "virtio-rng-pci": ("rng", "pci"), "virtio-rng": ("rng", "pci"),
    "virtio-rng-device": ("rng", "mmio"),
    "virtio-serial-pci": ("console", "pci"), "virtio-serial": ("console", "pci"),
    "virtio-console": ("console", "pci"), "virtconsole": ("console", "pci"),
    "virtio-serial-device": ("console", "mmio"),
}


def parse_device(text: str):  # noqa: ANN201 - a VirtioSpec, or a NIC before its netdev
    from pyvmm.board.virtio import VirtioSpec
    from pyvmm.errors import ConfigError
    from pyvmm.net.netdev import NIC_MODELS, parse_nic_text

    name = text.split(",", 1)[0]
    if name in NIC_MODELS:
        try:
            return parse_nic_text(text)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    if name not in DEVICE_NAMES:
        raise argparse.ArgumentTypeError(
            f"unknown device {name!r} (pyvmm has {', '.join([*DEVICE_NAMES, *NIC_MODELS])}; "
            "disks: --drive)")
    kind, transport = DEVICE_NAMES[name]
    return VirtioSpec(kind, transport=transport)


def _config_type(parse):  # noqa: ANN001, ANN202 - a netdev.py parser as an argparse type
    from pyvmm.errors import ConfigError

    def parse_option(text: str):  # noqa: ANN202
        try:
            return parse(text)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return parse_option


def _add_device_options(run: argparse.ArgumentParser) -> None:
    group = run.add_argument_group(
        "virtio devices (docs/VIRTIO.md)",
        "As on QEMU's pc machine, a virtio device is a PCI function by default (modern "
        "virtio-pci, Virtio 1.2 §4.1: PCI slot 2, 3, ... in order, MSI-X or INTx through "
        "the PIIX3 PIRQs); --drive if=virtio-mmio and the -device names put it on the "
        "virtio-mmio transport instead (§4.2.2: 0xFEB00000 + n*0x200 on ISA IRQ 5, 10, "
        "11, 7, 6, 3 in order; a Linux --kernel gets the matching virtio_mmio.device= "
        "options appended to its command line).")
    group.add_argument("--drive", metavar="file=PATH[,...]", type=parse_drive, action="append",
                       default=[], help="a virtio-blk disk on a raw image: file=PATH"
                       "[,readonly=on][,cache=writeback|none][,serial=ID][,format=raw]"
                       "[,if=virtio|virtio-mmio] (if=virtio, the default: virtio-pci); a "
                       "flush from the guest is an fsync of PATH")
    group.add_argument("--device", metavar="NAME", type=parse_device, action="append",
                       default=[], help="virtio-rng-pci (host entropy; virtio-rng is the "
                       "same) or virtio-serial-pci (hvc0 on the serial output; also "
                       "virtio-console, virtconsole); virtio-rng-device and "
                       "virtio-serial-device are the virtio-mmio ones; "
                       "virtio-net-pci,netdev=ID[,mac=MAC] a NIC (virtio-net-device: on "
                       "virtio-mmio; default MAC 52:54:00:VV:VV:NN from the VM's id and "
                       "the NIC's index)")
    from pyvmm.net.netdev import parse_netdev, parse_nic

    group.add_argument("--netdev", metavar="TYPE,id=ID,...", type=_config_type(parse_netdev),
                       action="append", default=[],
                       help="a NIC's backend: tap,id=ID,ifname=NAME (a host TAP interface; "
                            "creating one needs CAP_NET_ADMIN) or switch,id=ID,name=NAME (a "
                            "learning Ethernet switch of this process: the VMs of one "
                            "hypervisor naming the same switch are on one LAN)")
    group.add_argument("--nic", metavar="TYPE,...", type=_config_type(parse_nic),
                       action="append", default=[],
                       help="a netdev and its NIC in one: tap,ifname=NAME[,model=virtio]"
                            "[,mac=MAC] or switch,name=NAME[,...] (model=virtio: "
                            "virtio-net-pci; model=virtio-net-device: virtio-mmio)")


def _add_irqchip_option(run: argparse.ArgumentParser) -> None:
    from pyvmm.engines.registry import IRQCHIP_MODES

    run.add_argument("--irqchip", choices=IRQCHIP_MODES, default=None,
                     help="kvm only: where the interrupt controllers are. kernel (kvm's "
                          "default): KVM's in-kernel i8259 pair, I/O APIC and local APIC "
                          "(KVM_CREATE_IRQCHIP), no exits for them, the PIT the board's on "
                          "the board's clock (see --kvm-pit); user: the board's, in Python, "
                          "each access a VM exit. Either way their state goes in and out of "
                          "snapshots like the board's")
    run.add_argument("--kvm-pit", action="store_true",
                     help="kvm --irqchip kernel only: KVM's in-kernel PIT (KVM_CREATE_PIT2), "
                          "no exits for it, but it counts host time, so a timer-counting "
                          "guest's output depends on the host's load")
    run.add_argument("--no-ioeventfd", action="store_true",
                     help="kvm only: every virtio queue notification is a VM exit served in "
                          "Python (QEMU's ioeventfd=off). Default: KVM_IOEVENTFD signals the "
                          "device's I/O thread inside KVM, without an exit")


def _add_reset_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("--no-reboot", action="store_true",
                     help="exit instead of rebooting (as QEMU's option): a reset through "
                          "port 0x64, 0x92 or 0xCF9 stops the VM with status "
                          f"{StopKind.RESET.exit_code}. Without it a --bios guest restarts at "
                          "the reset vector; a kernel loaded directly stops with that "
                          "status anyway")
    run.add_argument("--reboot-timeout", metavar="MS", type=int, default=None,
                     help="milliseconds the firmware waits after a failed boot before it "
                          "reboots, -1: never (as QEMU's -boot reboot-timeout; fw_cfg "
                          "etc/boot-fail-wait, SeaBIOS's default 60000)")


def _add_snapshot_options(run: argparse.ArgumentParser) -> None:
    from pyvmm.engines.registry import ENGINES

    group = run.add_argument_group(
        "snapshots (docs/SNAPSHOTS.md)",
        "A snapshot holds the whole VM (CPU, RAM, devices, guest time), so it can resume "
        "under any engine.")
    group.add_argument("--snapshot-to", metavar="FILE", type=Path,
                       help="save a snapshot to FILE at the point given by --snapshot-at or "
                            "--snapshot-after-instructions, then stop (exit status 0)")
    group.add_argument("--snapshot-at", metavar="SECONDS", type=positive_float,
                       help="take the --snapshot-to snapshot after this many host seconds")
    group.add_argument("--snapshot-after-instructions", metavar="N", type=positive_int,
                       help="take it after N guest instructions (interp and jit only: "
                            "deterministic)")
    group.add_argument("--restore", metavar="FILE", type=Path,
                       help="resume the VM saved in FILE instead of booting an image; "
                            "--engine picks the engine (default: the one it was saved under)")
    group.add_argument("--switch-to", metavar="ENGINE", choices=sorted(ENGINES),
                       help="run under --engine until --switch-after(-instructions), then move "
                            "the running VM to ENGINE through an in-memory snapshot and "
                            "continue there; the switch point is printed on stderr")
    group.add_argument("--switch-after", metavar="SECONDS", type=positive_float,
                       help="switch after this many host seconds")
    group.add_argument("--switch-after-instructions", metavar="N", type=positive_int,
                       help="switch after N guest instructions (interp and jit only)")


def _pause_point(args: argparse.Namespace) -> tuple[float | None, int | None]:
    """Check the snapshot options; the (seconds, instructions) to pause at, if any."""
    from pyvmm.errors import ConfigError

    snapshot = (args.snapshot_at, args.snapshot_after_instructions)
    switch = (args.switch_after, args.switch_after_instructions)
    if args.snapshot_to is not None and args.switch_to is not None:
        raise ConfigError("give either --snapshot-to or --switch-to, not both")
    for target, name, point, option in ((args.snapshot_to, "--snapshot-to", snapshot,
                                         "--snapshot-at or --snapshot-after-instructions"),
                                        (args.switch_to, "--switch-to", switch,
                                         "--switch-after or --switch-after-instructions")):
        given = [p for p in point if p is not None]
        if target is None and given:
            raise ConfigError(f"{option} needs {name}")
        if target is not None and len(given) != 1:
            raise ConfigError(f"{name} needs exactly one of {option}")
    if args.restore is not None:
        from pyvmm.boot.registry import IMAGE_OPTIONS

        if args.guest is not None or args.append is not None \
                or any(getattr(args, option.key) for option in IMAGE_OPTIONS):
            raise ConfigError("--restore resumes a saved VM: give no GUEST, image or --append")
        if args.drive or args.device or args.netdev or args.nic:
            raise ConfigError("--restore brings back the saved VM's own devices: give no "
                              "--drive, --device, --netdev or --nic")
        if args.vms > 1:
            raise ConfigError("--restore runs one VM; --vms does not apply")
    if args.vms > 1 and args.drive:
        raise ConfigError("--drive gives one VM its disk; --vms does not apply (copies of "
                          "one VM would share one disk image)")
    if args.vms > 1 and (args.snapshot_to is not None or args.switch_to is not None):
        raise ConfigError("--snapshot-to and --switch-to run one VM; --vms does not apply")
    seconds = args.snapshot_at if args.snapshot_to is not None else args.switch_after
    instructions = (args.snapshot_after_instructions if args.snapshot_to is not None
                    else args.switch_after_instructions)
    return seconds, instructions


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `pyvmm: error: ... (see pyvmm run --help)`.

    An unknown option is blamed by itself, by the subcommand that was given it
    (with the closest real option), not by the top level with the words after it.
    A value that starts with '-' (`-m -5M`) is taken as the option's value, so the
    option's own check explains what is wrong with it.
    """

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201
        args = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self._attach_dash_values(args), namespace)

    def _attach_dash_values(self, args: list[str]) -> list[str]:
        known = self._option_string_actions
        out: list[str] = []
        i = 0
        while i < len(args):
            action = known.get(args[i])
            if (action is not None and action.nargs is None and action.option_strings
                    and i + 1 < len(args) and args[i + 1].startswith("-")
                    and args[i + 1] not in known and type(action).__name__ == "_StoreAction"):
                out.append(f"{action.option_strings[-1]}={args[i + 1]}")
                i += 2
                continue
            out.append(args[i])
            i += 1
        return out

    def parse_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = getattr(parsed, "_parser", self)
            parser.unknown(extras)
        return parsed

    def unknown(self, extras: list[str]) -> NoReturn:
        options = [e for e in extras if e.startswith("-")]
        if not options:
            self.error(f"unexpected argument {extras[0]!r}")
        bad = options[0].split("=", 1)[0]
        near = difflib.get_close_matches(bad, list(self._option_string_actions), n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        self.error(f"unrecognized arguments: {bad}{hint}")

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"pyvmm: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from pyvmm.engines.registry import ENGINE_SUMMARIES

    parser = _Parser(
        prog="pyvmm",
        description="pyvmm: an x86 PC emulator and virtualizer. One virtual PC, several "
                    "engines: " + "; ".join(f"{name} ({summary})"
                                            for name, summary in ENGINE_SUMMARIES.items())
                    + ".",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'pyvmm run --help' for the options of a run.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND",
                                     parser_class=_Parser)
    commands.required = True

    run = commands.add_parser(
        "run", help="boot a guest and run it until it stops",
        description="Boot a guest on the virtual PC and run it until it exits, halts, "
                    "faults or times out. The guest's COM1 is your terminal (Ctrl-A x "
                    "quits) or, without a terminal, stdout. Bytes written to the debug "
                    "console port 0xE9 also go to stdout.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXIT_STATUS_HELP + "\nexamples:\n  pyvmm run demo\n"
               "  pyvmm run --engine interp --append work=5 demo --stats\n"
               "  pyvmm run --kernel mykernel.elf --serial file:serial.log --timeout 10\n"
               "  pyvmm run --engine interp demo --switch-to kvm --switch-after 0.05\n")
    _add_guest_options(run)
    debugging = run.add_argument_group(
        "debugging (docs/DEBUGGING.md)",
        "Attach gdb as to QEMU: `pyvmm run -s -S --engine interp --kernel k.elf`, then "
        "`gdb k.elf -ex 'target remote :1234'`.")
    debugging.add_argument("--gdb", metavar="tcp::PORT", default=None,
                           help="serve the GDB remote protocol on PORT (localhost); "
                                "tcp:HOST:PORT listens on HOST")
    debugging.add_argument("-s", dest="gdb_default", action="store_true",
                           help="shorthand for --gdb tcp::1234")
    debugging.add_argument("-S", dest="gdb_wait", action="store_true",
                           help="do not start the guest until gdb connects and continues")
    debugging.add_argument("--record", metavar="FILE", type=Path, default=None,
                           help="log every input from outside (typed serial bytes, the "
                                "halted guest's clock jumps) with its guest instruction "
                                "count (interp, jit)")
    debugging.add_argument("--replay", metavar="FILE", type=Path, default=None,
                           help="run again with the inputs of a --record FILE at the same "
                                "instruction counts, ignoring live input; the guest's output "
                                "is the recorded run's, byte for byte (same image or "
                                "--restore snapshot, same engine family)")
    output = run.add_argument_group("output and limits")
    output.add_argument("--serial", default="stdio", metavar="stdio|file:PATH|none",
                        help="where COM1 goes (default: stdio)")
    output.add_argument("--debugcon", default="stdio", metavar="stdio|file:PATH|none",
                        help="where the debug console (ports 0xE9 and 0x402, SeaBIOS's log) "
                             "goes (default: stdio)")
    output.add_argument("--timeout", type=positive_float, metavar="SECONDS",
                        help="stop the VM after this many host seconds")
    output.add_argument("--stats", action="store_true",
                        help="print what the engine did (exits by reason, port accesses "
                             "by device, ...) on stderr at the end")
    output.add_argument("-q", "--quiet", action="store_true",
                        help="do not print the stop reason of a guest that exited "
                             "through the debug-exit port")
    output.add_argument("--vms", type=positive_int, default=1, metavar="N",
                        help="run N isolated copies of the guest under one hypervisor; "
                             "COM1 lines go to stdout prefixed [vmK] (or to file:PATH with "
                             "{name} in PATH), then a report with one row per VM; the exit "
                             "status is the one all VMs share, else the first VM's that "
                             "differs from vm1's (docs/HYPERVISOR.md)")
    _add_device_options(run)
    _add_irqchip_option(run)
    _add_reset_options(run)
    _add_snapshot_options(run)
    run.set_defaults(handler=cmd_run, engine=None)  # None: the snapshot's with --restore

    compare = commands.add_parser(
        "compare", help="run one guest under every engine and compare what each did",
        description="Run the same guest once per engine, each on a fresh virtual PC, and "
                    "print one table with a column per engine: whether the guest behaved "
                    "the same (console output and exit status), wall time, instructions "
                    "and MIPS where known, VM exits by reason, interrupts, port/MMIO "
                    "accesses by device, paging work, and for KVM the share of time "
                    "spent in the guest.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  pyvmm compare demo\n"
               "  pyvmm compare --engines interp,kvm --json out.json --plot out.png "
               "--append work=5 demo\n"
               "  pyvmm compare --engines kvm,kvm:user,kvm:kvm-pit demo\n"
               "  pyvmm compare --engines kvm,kvm:no-ioeventfd --kernel K --drive file=D\n"
               "  pyvmm compare --engines kvm --append work=2 --append 'work=2 pv' demo"
               "   (emulated devices vs para-virtual, side by side)\n")
    _add_guest_options(compare, with_engine=False, append_many=True)
    compare.add_argument("--engines", metavar="LIST", default=None,
                         help="comma-separated engines (default: all, interp first); "
                              "kvm is kvm's default (--irqchip kernel), kvm:user kvm with "
                              "--irqchip user, kvm:kvm-pit kvm with --kvm-pit, "
                              "kvm:no-ioeventfd (and kvm:user:no-ioeventfd) kvm with "
                              "--no-ioeventfd")
    _add_device_options(compare)
    compare.add_argument("--json", metavar="FILE", help="also write the results as JSON "
                         "(schema: docs/compare-schema.json); - for stdout")
    compare.add_argument("--plot", metavar="FILE.png", help="draw time and exits per engine")
    compare.add_argument("--timeout", type=positive_float, metavar="SECONDS", default=600.0,
                         help="per-engine time limit (default: 600)")
    compare.set_defaults(handler=cmd_compare)

    hypervisor = commands.add_parser(
        "hypervisor", help="run a mix of guests, engines and memory sizes from a TOML file",
        description="Run every VM described in a TOML file at once under one hypervisor "
                    "(format: docs/HYPERVISOR.md, example: examples/hypervisor.toml). Each "
                    "VM's console goes to its own file or to stdout prefixed with its name; "
                    "a report with one row per VM is printed on stderr at the end.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: the one all VMs share, else the status of the first VM (in "
               "file order) that differs from the first VM's.\n\nexample:\n"
               "  pyvmm hypervisor examples/hypervisor.toml\n")
    hypervisor.add_argument("config", metavar="FILE.toml", type=Path)
    hypervisor.add_argument("--stats", action="store_true",
                            help="print each VM's statistics on stderr before the report")
    hypervisor.set_defaults(handler=cmd_hypervisor)

    guests = commands.add_parser("guests", help="list the bundled guests")
    guests.set_defaults(handler=cmd_guests)

    engines = commands.add_parser("engines", help="list the engines and whether they can "
                                                   "run on this host")
    engines.set_defaults(handler=cmd_engines)
    for sub in commands.choices.values():
        sub.set_defaults(_parser=sub)  # who blames an unknown option (_Parser.parse_args)
    return parser


def resolve_image(args: argparse.Namespace):
    """The ImageSpec the image options ask for (pyvmm/image_request.py)."""
    from pyvmm.boot.registry import IMAGE_OPTIONS
    from pyvmm.image_request import image_spec

    files = {option.key: getattr(args, option.key) for option in IMAGE_OPTIONS
             if getattr(args, option.key) is not None}
    return image_spec(files, args.guest, args.append, getattr(args, "initrd", None),
                      getattr(args, "linux_entry", None))


def cmd_run(args: argparse.Namespace) -> int:
    import time

    from pyvmm.console import open_serial_output
    from pyvmm.engines.registry import DEFAULT_ENGINE
    from pyvmm.vm import VirtualMachine

    pause_seconds, pause_instructions = _pause_point(args)
    gdb = _gdb_address(args)
    _check_input_log_options(args)
    requested_engine = args.engine
    args.engine = args.engine or DEFAULT_ENGINE
    spec = None if args.restore is not None else resolve_image(args)
    from pyvmm.board.virtio import virtio_specs

    virtio = virtio_specs(args.drive, args.device, args.netdev, args.nic)
    if args.vms > 1:
        return cmd_run_many(args, spec, virtio)
    serial, serial_is_stdio = open_serial_output(args.serial)
    debugcon, _ = open_serial_output(args.debugcon, "--debugcon")
    if args.restore is not None:
        from pyvmm.snapshot import Snapshot, restore_snapshot

        snapshot = Snapshot.load(args.restore)
        vm = restore_snapshot(snapshot, requested_engine, serial_output=serial,
                              debugcon_output=debugcon, irqchip=args.irqchip,
                              ioeventfd=not args.no_ioeventfd, kvm_pit=args.kvm_pit)
        print(f"pyvmm: {vm.name} restored {snapshot.describe()}; resuming under "
              f"{vm.engine_name}", file=sys.stderr)
    else:
        vm = VirtualMachine(engine=args.engine, ram_size=args.memory, serial_output=serial,
                            debugcon_output=debugcon, unmapped=args.unmapped,
                            virtio=virtio, irqchip=args.irqchip,
                            reboot_timeout=args.reboot_timeout,
                            ioeventfd=not args.no_ioeventfd, kvm_pit=args.kvm_pit)
    vm.no_reboot = args.no_reboot
    try:
        if spec is not None:
            vm.load(spec)
        if args.record is not None:
            vm.record_inputs(args.record)
        if args.replay is not None:
            log = vm.replay_inputs(args.replay)
            print(f"pyvmm: {vm.name} replaying {len(log.events)} inputs from {args.replay} "
                  f"(recorded under {log.engine})", file=sys.stderr)
        started = time.monotonic()
        timeout = args.timeout
        if pause_seconds is not None or pause_instructions is not None:
            reason, paused = _run_to_pause_point(vm, pause_seconds, pause_instructions,
                                                 timeout, serial, serial_is_stdio)
            if paused and args.snapshot_to is not None:
                from pyvmm.snapshot import take_snapshot

                snapshot = take_snapshot(vm)
                snapshot.save(args.snapshot_to)
                print(f"pyvmm: {vm.name} snapshot saved to {args.snapshot_to} "
                      f"({snapshot.describe()}); resume with: pyvmm run --restore "
                      f"{args.snapshot_to}", file=sys.stderr)
                if args.stats:
                    print(vm.stats.format(), file=sys.stderr)
                return 0
            if paused:
                from pyvmm.snapshot import switch_engine

                old_engine = vm.engine_name
                vm, snapshot = switch_engine(vm, args.switch_to)
                count = snapshot.instructions
                print(f"pyvmm: {vm.name} switched {old_engine} -> {vm.engine_name} at guest "
                      f"time {snapshot.guest_ns / 1e9:.6f} s"
                      + (f" after {count} guest instructions" if count is not None else ""),
                      file=sys.stderr, flush=True)
                left = None if timeout is None else timeout - (time.monotonic() - started)
                if left is not None and left <= 0:
                    reason = StopReason(StopKind.TIMEOUT, f"after {timeout} s")
                else:
                    reason = _run_vm(vm, left, serial, serial_is_stdio)
            elif args.snapshot_to is not None or args.switch_to is not None:
                what = "no snapshot written" if args.snapshot_to is not None else "no switch"
                print(f"pyvmm: {vm.name} stopped before the pause point: {what}",
                      file=sys.stderr)
        elif gdb is not None:
            from pyvmm.debug.gdbstub import GdbStub

            reason = GdbStub(vm, gdb, wait_for_client=args.gdb_wait).serve(timeout)
        else:
            reason = _run_vm(vm, timeout, serial, serial_is_stdio)
        input_log_note = vm.finish_input_log(reason)
        if input_log_note is not None:
            print(f"pyvmm: {vm.name} {input_log_note}", file=sys.stderr)
        if not (args.quiet and reason.kind is StopKind.DEBUG_EXIT):
            print(f"pyvmm: {vm.name} stopped: {reason.describe()}", file=sys.stderr)
        if args.stats:  # last, so that its final line `exits: N` ends the output
            print(vm.stats.format(), file=sys.stderr)
        return reason.exit_code
    finally:
        vm.close()


def _check_input_log_options(args: argparse.Namespace) -> None:
    """--record / --replay: one VM, one engine, one of the two."""
    from pyvmm.errors import ConfigError

    if args.record is None and args.replay is None:
        return
    if args.record is not None and args.replay is not None:
        raise ConfigError("--record and --replay do not combine: replay a recording, or "
                          "make one")
    option = "--record" if args.record is not None else "--replay"
    if args.vms > 1 or args.snapshot_to is not None or args.switch_to is not None:
        raise ConfigError(f"{option} follows one VM under one engine: it does not combine "
                          "with --vms, --snapshot-to or --switch-to (record or replay from "
                          "a snapshot with --restore FILE)")


def _gdb_address(args: argparse.Namespace) -> str | None:
    """--gdb / -s / -S, checked before anything runs."""
    from pyvmm.errors import ConfigError

    gdb = args.gdb or ("tcp::1234" if args.gdb_default else None)
    if args.gdb_wait and gdb is None:
        raise ConfigError("-S waits for gdb: give -s or --gdb tcp::PORT as well")
    if gdb is not None:
        from pyvmm.debug.gdbstub import parse_gdb_address

        parse_gdb_address(gdb)
        if args.vms > 1 or args.snapshot_to is not None or args.switch_to is not None:
            raise ConfigError("--gdb debugs one VM: it does not combine with --vms, "
                              "--snapshot-to or --switch-to")
    return gdb


def _guard_outputs(vm, timeout: float | None) -> None:  # noqa: ANN001
    """Stdout's reader going away stops the VM (OUTPUT_CLOSED); one that does not
    read holds guest output up at most until --timeout."""
    import time

    from pyvmm.console import StdoutWriter

    deadline = None if timeout is None else time.monotonic() + timeout
    for writer in (vm.serial_output, vm.debugcon_output):
        if isinstance(writer, StdoutWriter):
            writer.deadline = deadline
            writer.on_closed = lambda: vm.board.request_stop(
                StopReason(StopKind.OUTPUT_CLOSED, "the reader of stdout went away"))


def _run_vm(vm, timeout: float | None, serial, serial_is_stdio: bool) -> StopReason:  # noqa: ANN001
    """One `vm.run`, with the terminal as COM1 when stdio is a terminal."""
    from pyvmm.console import TerminalConsole

    _guard_outputs(vm, timeout)

    if serial_is_stdio and TerminalConsole.usable():
        def quit_vm() -> None:
            vm.board.events.post(lambda: vm.board.request_stop(
                StopReason(StopKind.USER_QUIT, "Ctrl-A x")))

        console = TerminalConsole(vm.board.serial_input, quit_vm, serial.write)
        with console:
            return vm.run(timeout)
    return vm.run(timeout)


def _run_to_pause_point(vm, seconds: float | None, instructions: int | None,  # noqa: ANN001
                        timeout: float | None, serial, serial_is_stdio: bool  # noqa: ANN001
                        ) -> tuple[StopReason, bool]:
    """Run until the pause point (host seconds, or guest instructions under an
    emulating engine); (reason, True) if it was reached with the VM paused."""
    from pyvmm.errors import ConfigError

    if instructions is not None:
        if not hasattr(vm.engine, "max_instructions"):
            raise ConfigError(f"engine {vm.engine_name!r} does not count guest instructions; "
                              "use --snapshot-at/--switch-after SECONDS")
        vm.engine.max_instructions = instructions
        try:
            reason = _run_vm(vm, timeout, serial, serial_is_stdio)
        finally:
            vm.engine.max_instructions = None
        return reason, reason.kind is StopKind.PAUSED and reason.message == "instruction limit"
    assert seconds is not None
    limit = seconds if timeout is None else min(seconds, timeout)
    reason = _run_vm(vm, limit, serial, serial_is_stdio)
    return reason, reason.kind is StopKind.TIMEOUT and (timeout is None or seconds <= timeout)


def cmd_run_many(args: argparse.Namespace, spec, virtio: tuple = ()) -> int:  # noqa: ANN001
    """`pyvmm run --vms N`: N copies of one guest (an ImageSpec) under one hypervisor;
    each copy has the same virtio devices, its NICs on the same switches."""
    from pyvmm.errors import ConfigError
    from pyvmm.hypervisor import MAX_COUNT, VmConfig, run_and_report

    if args.vms > MAX_COUNT:
        raise ConfigError(f"--vms: at most {MAX_COUNT} VMs")
    if any(spec.options.get("netdev") == "tap" for spec in virtio):
        raise ConfigError("a TAP netdev is one VM's; --vms copies would share it (use "
                          "--netdev switch)")
    configs = []
    for index in range(1, args.vms + 1):
        name = f"vm{index}"
        console = {"stdio": "stdout"}.get(args.serial, args.serial)
        if console.startswith("file:"):
            console = (console.replace("{name}", name) if "{name}" in console
                       else f"{console}.{name}")
        configs.append(VmConfig(name=name, image=spec, engine=args.engine,
                                ram_size=args.memory, console=console, timeout=args.timeout,
                                unmapped=args.unmapped, virtio=virtio))
    return run_and_report(configs, stats=args.stats)


def cmd_hypervisor(args: argparse.Namespace) -> int:
    from pyvmm.hypervisor import load_config, run_and_report

    configs, slice_seconds = load_config(args.config)
    return run_and_report(configs, slice_seconds, stats=args.stats)


def _check_output_path(path: str | None, option: str, allow_stdout: bool = False,
                       suffix: str | None = None) -> None:
    """Fail before a long run, not after it, if an output file cannot be written."""
    from pyvmm.errors import ConfigError

    if path is None or (allow_stdout and path == "-"):
        return
    target = Path(path)
    if suffix is not None and target.suffix.lower() != suffix:
        raise ConfigError(f"{option} {path}: the file name must end in {suffix}")
    if target.is_dir():
        raise ConfigError(f"{option} {path}: is a directory")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"{option} {path}: no such directory {parent}")
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ConfigError(f"{option} {path}: permission denied")


def cmd_compare(args: argparse.Namespace) -> int:
    from pyvmm import compare
    from pyvmm.errors import ConfigError

    _check_output_path(args.json, "--json", allow_stdout=True)
    _check_output_path(args.plot, "--plot", suffix=".png")
    appends: list[str] | None = args.append
    if appends is not None and len(set(appends)) != len(appends):
        raise ConfigError("--append: the same command line is given twice")
    args.append = appends[0] if appends else None  # resolve_image checks it applies
    spec = resolve_image(args)
    if args.engines is not None:
        engines = [name.strip() for name in args.engines.split(",") if name.strip()]
        unknown = [name for name in engines if name not in compare.COLUMNS]
        if unknown:
            raise ConfigError(f"unknown engine(s) {', '.join(unknown)} "
                              f"(choose from {', '.join(compare.COLUMNS)})")
    else:
        engines = compare.default_engines()
    if not engines:
        raise ConfigError("--engines names no engine")
    runs = compare.compare(spec, engines, args.memory, args.timeout,
                           progress=lambda line: print(line, file=sys.stderr, flush=True),
                           unmapped=args.unmapped, cmdlines=appends,
                           virtio=tuple(args.drive + args.device))
    # With --json -, stdout is the JSON document alone; the table goes to stderr.
    table_stream = sys.stderr if args.json == "-" else sys.stdout
    print(compare.format_table(spec, runs), file=table_stream)
    try:
        if args.json:
            compare.write_json(spec, runs, args.json)
        if args.plot:
            compare.plot(runs, args.plot)
    except OSError as error:
        raise ConfigError(f"cannot write {error.filename}: {error.strerror}") from None
    usable = [run for run in runs if run.available]
    if not usable:
        print("pyvmm: error: no engine could run", file=sys.stderr)
        return EXIT_ENGINE_UNAVAILABLE
    # Each run against the first with the same command line (compare.same_behaviour).
    return 0 if compare.same_behaviour(runs) else 1


def cmd_guests(args: argparse.Namespace) -> int:
    from pyvmm.guests import BUILT_GUESTS, BUNDLED_GUESTS

    for guest in BUNDLED_GUESTS.values():
        print(f"{guest.name:<10} {guest.kind:<12} {guest.description}")
    for name, description in BUILT_GUESTS.items():
        print(f"{name:<10} {'linux':<12} {description}")
    return 0


def cmd_engines(args: argparse.Namespace) -> int:
    from pyvmm.engines.registry import ENGINES, engine_availability

    for name in ENGINES:
        ok, reason = engine_availability(name)
        print(f"{name:<8} {'available' if ok else 'unavailable: ' + reason}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except EngineUnavailable as error:
        print(f"pyvmm: error: {error}", file=sys.stderr)
        return EXIT_ENGINE_UNAVAILABLE
    except PyvmmError as error:
        print(f"pyvmm: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("pyvmm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

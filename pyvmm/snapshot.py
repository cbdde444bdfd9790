"""Snapshots: a paused VM as data, resumable under any engine.

A snapshot is everything the guest can observe: the `CpuState` (engine
neutral by design), guest RAM/ROM, every device's registers, the virtual
clock and the timers devices armed on it (stored as the devices' absolute
guest-time deadlines and re-armed on the new board's clock).  Because that is
the whole machine, a VM paused under one engine resumes under another with
guest time continuing from where it stopped.

A snapshot is only taken at an instruction boundary with no I/O half done:
after `VirtualMachine.run()` returned (interp/jit stop between instructions;
the KVM engine completes a pending port/MMIO exit before returning, and an
interrupt it acknowledged but KVM has not delivered yet travels in
`CpuState.pending_interrupt`).

File format (docs/SNAPSHOTS.md): a ZIP archive holding `manifest.json` (format
name and version, pyvmm version, engine, RAM size, image, CPU, board and
clock state, stats, and a SHA-256 digest over all of it and every memory
member) and one deflate-compressed member per memory region,
`memory/<region>.bin`.  Reading checks the digest and every field against
the hardware's ranges (each device's schema, next to its `set_state`): any
damage is one "snapshot damaged: ..." line (CLI exit status 2).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from pyvmm import __version__
from pyvmm.board.pc import MAX_RAM, MIN_RAM, UNMAPPED_POLICIES, PcBoard
from pyvmm.boot.linux import ENTRY_64, LINUX_ENTRIES
from pyvmm.boot.registry import LOADERS
from pyvmm.cpu.state import CpuState
from pyvmm.errors import ImageError, PyvmmError
from pyvmm.files import read_user_file
from pyvmm.schema import (
    U64,
    Bool,
    Choice,
    Int,
    ListOf,
    Maybe,
    Object,
    Record,
    StateError,
    Str,
)
from pyvmm.stats import STATS_STATE

if TYPE_CHECKING:
    from pyvmm.vm import VirtualMachine

FORMAT_NAME = "pyvmm-snapshot"
FORMAT_VERSION = 2  # 2: the manifest carries a SHA-256 digest of the whole snapshot
MANIFEST = "manifest.json"
DIGEST = "sha256"
MEMORY_DIR = "memory/"
CHUNK = 1 << 20  # bytes copied per step when (de)compressing memory
MAX_MANIFEST_BYTES = 16 << 20  # a manifest is a few KiB; refuse absurd ones
MAX_ROM_BYTES = 16 << 20  # largest BIOS ROM pyvmm maps
ROM_REGION = "bios"  # the ROM region `PcBoard.map_bios` recreates (with "bios-low")


# RAM (at most MAX_RAM) compresses, so a snapshot file is never larger than this.
MAX_SNAPSHOT_BYTES = 2 * MAX_RAM


class SnapshotError(PyvmmError):
    """A snapshot file is unreadable, malformed, or from another format version."""


@dataclass
class RegionImage:
    """The contents of one guest-physical memory region."""

    name: str
    gpa: int
    size: int
    readonly: bool
    data: bytes

    def describe(self) -> dict:
        return {"name": self.name, "gpa": self.gpa, "size": self.size,
                "readonly": self.readonly, "member": MEMORY_DIR + self.name + ".bin"}


@dataclass
class Snapshot:
    """A paused VM: CPU, board (devices, clock, pending stop), memory, metadata."""

    engine: str
    ram_size: int
    cpu: CpuState
    board: dict
    regions: list[RegionImage]
    image: dict | None = None  # the booted image: _IMAGE's fields
    unmapped: str = "stop"
    stats: dict | None = None
    pyvmm_version: str = __version__
    extra: dict = field(default_factory=dict)

    @property
    def guest_ns(self) -> int:
        """Guest time (ns since the VM started) at which the snapshot was taken."""
        return int(self.board["clock"]["now_ns"])

    @property
    def instructions(self) -> int | None:
        """Guest instructions counted so far (by the emulating engines; KVM's are not)."""
        return None if self.stats is None else self.stats.get("instructions")

    def describe(self) -> str:
        """One line: where this snapshot is in the guest's life."""
        count = self.instructions
        text = f"guest time {self.guest_ns / 1e9:.6f} s"
        if count is not None:
            text += f", {count} instructions"
        label = (self.image or {}).get("label") or (self.image or {}).get("path")
        return f"{label or 'guest'} under {self.engine}: {text}"

    # -- file format ----------------------------------------------------------
    def manifest(self) -> dict:
        return {
            "format": FORMAT_NAME, "version": FORMAT_VERSION,
            "pyvmm_version": self.pyvmm_version, "engine": self.engine,
            "ram_size": self.ram_size, "image": self.image, "unmapped": self.unmapped,
            "guest_ns": self.guest_ns, "cpu": self.cpu.to_dict(), "board": self.board,
            "stats": self.stats, "memory": [r.describe() for r in self.regions],
            "extra": self.extra,
        }

    def write(self, out: BinaryIO) -> None:
        manifest = self.manifest()
        manifest[DIGEST] = _digest(manifest, [(r.describe()["member"], r.data)
                                              for r in self.regions])
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED,
                             compresslevel=1) as archive:
            archive.writestr(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
            for region in self.regions:
                with archive.open(region.describe()["member"], "w") as member:
                    view = memoryview(region.data)
                    for start in range(0, len(view), CHUNK):
                        member.write(view[start:start + CHUNK])

    def save(self, path: str | Path) -> None:
        """Write the snapshot file atomically (a temporary file, then rename)."""
        path = Path(path)
        temporary = path.with_name(path.name + ".tmp")
        try:
            with open(temporary, "wb") as out:
                self.write(out)
            os.replace(temporary, path)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise SnapshotError(f"{path}: cannot write snapshot: {error.strerror}") from None

    @classmethod
    def read(cls, source: BinaryIO, where: str = "snapshot") -> Snapshot:
        """Parse and check a snapshot; any damage is one SnapshotError line.

        Every layer that can notice damage (the ZIP container, deflate, JSON,
        the SHA-256 digest, each field's range) is caught here and reported the
        same way, so no corruption reaches the user as a traceback.
        """
        try:
            with zipfile.ZipFile(source) as archive:
                return _parse(archive, where)
        except SnapshotError:
            raise
        except StateError as error:
            raise _damaged(where, str(error)) from None
        except _CONTAINER_ERRORS as error:
            raise _damaged(where, f"{type(error).__name__}: {_one_line(error)}") from None

    @classmethod
    def load(cls, path: str | Path) -> Snapshot:
        path = Path(path)
        data = read_user_file(path, MAX_SNAPSHOT_BYTES, SnapshotError, "snapshot")
        return cls.read(io.BytesIO(data), str(path))


# What zipfile/zlib/json raise on a damaged archive: BadZipFile (a ValueError
# subclass would not do), NotImplementedError for an unknown compression
# method, RuntimeError for an "encrypted" flag, OSError/EOFError for a short
# member, OverflowError/IndexError on wild header fields.
_CONTAINER_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
                     NotImplementedError, RuntimeError, KeyError, TypeError, ValueError,
                     AttributeError, IndexError, OverflowError, UnicodeError, RecursionError)


def _damaged(where: str, what: str) -> SnapshotError:
    """The one-line refusal; text that came from the file cannot break the line."""
    text = f"{where}: {what}"
    printable = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return SnapshotError(f"snapshot damaged: {printable}")


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _expect(condition: bool, where: str, what: str) -> None:
    if not condition:
        raise _damaged(where, what)


def _digest(manifest: dict, members: list[tuple[str, bytes]]) -> str:
    """SHA-256 over the manifest (canonical JSON, without its own digest) and
    every memory member's name and contents, in manifest order."""
    body = {key: value for key, value in manifest.items() if key != DIGEST}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                       allow_nan=False).encode())
    for name, data in members:
        digest.update(len(name).to_bytes(4, "little") + name.encode())
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


_REGION = Record({"name": Str(64), "gpa": U64, "size": Int(1, MAX_RAM + 2 * MAX_ROM_BYTES),
                  "readonly": Bool(), "member": Str(128)})
# The kind a snapshot records is a row of the loader table (pyvmm/boot/registry.py).
# The image's files are recorded by path: a board restored from a snapshot gets
# from them what its memory does not hold (the fw_cfg kernel items of
# --linux-entry real, which a reset boots again: vm.republish_image).
_IMAGE = Record({"kind": Choice(frozenset(LOADERS)), "path": Str(), "cmdline": Str(),
                 "label": Str(), "initrd": Str(), "linux_entry": Choice(frozenset(LINUX_ENTRIES)),
                 "firmware": Str()},
                optional=frozenset({"cmdline", "label", "initrd", "linux_entry", "firmware"}))
# The manifest's own fields; the CPU, board and stats sections are checked by
# their owners' schemas (CPU_STATE, the devices' set_state, STATS_STATE).
MANIFEST_STATE = Record({
    "format": Choice(frozenset({FORMAT_NAME})), "version": Int(FORMAT_VERSION, FORMAT_VERSION),
    "pyvmm_version": Str(64), "engine": Str(32), "ram_size": Int(MIN_RAM, MAX_RAM),
    "image": Maybe(_IMAGE), "unmapped": Choice(frozenset(UNMAPPED_POLICIES)),
    "guest_ns": Int(0, (1 << 63) - 1), "cpu": Object(), "board": Object(),
    "stats": Maybe(STATS_STATE), "memory": ListOf(_REGION, 1, 16), "extra": Object(),
    DIGEST: Str(64),
})


def _parse(archive: zipfile.ZipFile, where: str) -> Snapshot:
    names = set(archive.namelist())
    _expect(MANIFEST in names, where, f"no {MANIFEST}")
    _expect(archive.getinfo(MANIFEST).file_size <= MAX_MANIFEST_BYTES, where,
            "manifest too large")
    try:
        manifest = json.loads(archive.read(MANIFEST))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _damaged(where, f"manifest is not JSON ({_one_line(error)})") from None
    _expect(isinstance(manifest, dict), where, "manifest is not an object")
    _expect(manifest.get("format") == FORMAT_NAME, where,
            f"format is {manifest.get('format')!r}, not {FORMAT_NAME!r}")
    version = manifest.get("version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise _damaged(where, f"snapshot format version {version!r} is not supported "
                              f"(this pyvmm {__version__} reads version {FORMAT_VERSION})")
    MANIFEST_STATE.check(manifest)
    ram_size = manifest["ram_size"]
    expected = {entry["member"] for entry in manifest["memory"]} | {MANIFEST}
    _expect(names == expected, where,
            f"unexpected members {sorted(names - expected)[:3]}" if names - expected
            else f"memory members missing: {sorted(expected - names)[:3]}")
    regions, members = [], []
    for entry in manifest["memory"]:
        name, size, member = entry["name"], entry["size"], entry["member"]
        _expect(archive.getinfo(member).file_size == size, where,
                f"memory region {name!r} is not {size} bytes")
        data = bytearray(size)
        with archive.open(member) as stream:
            view = memoryview(data)
            done = 0
            while done < size:
                got = stream.readinto(view[done:done + CHUNK])
                if not got:
                    break
                done += got
            # Reading to the end is what makes zipfile check the member's CRC-32.
            _expect(stream.read(1) == b"", where, f"memory region {name!r} is too long")
        _expect(done == size, where, f"memory region {name!r} is truncated")
        members.append((member, bytes(data)))
        regions.append(RegionImage(name, entry["gpa"], size, entry["readonly"], members[-1][1]))
    _expect(_digest(manifest, members) == manifest[DIGEST], where,
            "SHA-256 digest does not match the contents")
    try:
        cpu = CpuState.from_dict(manifest["cpu"])
    except StateError as error:
        raise error.within("cpu") from None
    board = manifest["board"]
    _expect(isinstance(board.get("clock"), dict) and isinstance(board.get("devices"), dict),
            where, "board state lacks clock or devices")
    return Snapshot(engine=manifest["engine"], ram_size=ram_size,
                    cpu=cpu, board=board, regions=regions,
                    image=manifest["image"], unmapped=manifest["unmapped"],
                    stats=manifest["stats"], pyvmm_version=manifest["pyvmm_version"],
                    extra=manifest["extra"])


# -- taking and restoring ---------------------------------------------------------

def _stats_state(vm: VirtualMachine) -> dict:
    stats = vm.board.stats
    return stats.as_dict()


def _restore_stats(board: PcBoard, state: dict | None) -> None:
    """Counters carried over (their shape was checked by STATS_STATE on load)."""
    if not state:
        return
    STATS_STATE.check(state)
    stats = board.stats
    stats.instructions = state.get("instructions")
    stats.wall_seconds = float(state.get("wall_seconds") or 0.0)
    if state.get("guest_seconds") is not None:
        stats.guest_seconds = (stats.guest_seconds or 0.0) + float(state["guest_seconds"])
    for category, counters in (state.get("counters") or {}).items():
        for key, value in counters.items():
            stats.count(category, key, int(value))


def take_snapshot(vm: VirtualMachine) -> Snapshot:
    """Capture a VM that is not running (its `run()` has returned).

    The clock is read first, so the devices' lazily computed state (PIT
    counters, RTC time) and their timer deadlines are all relative to it.
    """
    board_state = vm.board.get_state()
    vm.engine.save_devices(board_state)  # devices the engine runs itself (KVM's irqchip)
    cpu = vm.engine.get_state()
    regions = [RegionImage(r.name, r.gpa, r.size, r.readonly,
                           bytes(r.backing[r.offset:r.offset + r.size]))
               for r in vm.board.memory.regions]
    image = None
    if vm.image is not None:
        image = {"kind": vm.image.kind, "path": str(vm.image.path),
                 "cmdline": vm.image.cmdline, "label": vm.image.label,
                 "linux_entry": vm.image.linux_entry}
        for name in ("initrd", "firmware"):
            if getattr(vm.image, name) is not None:
                image[name] = str(getattr(vm.image, name))
    vm.board.flush_disks()  # what the snapshot's disks hold is on the host's disk
    extra = {"virtio": [spec.to_json() for spec in vm.board.virtio_specs]} \
        if vm.board.virtio_specs else {}
    return Snapshot(engine=vm.engine_name, ram_size=vm.board.ram_size, cpu=cpu,
                    board=board_state, regions=regions, image=image,
                    unmapped=vm.unmapped, stats=_stats_state(vm), extra=extra)


def _restore_memory(board: PcBoard, regions: list[RegionImage], board_state: dict) -> None:
    """Recreate the ROM mapping if the snapshot had one, apply the device state
    that decides the memory layout (PcBoard.restore_layout), then fill every region."""
    have = {r.name for r in board.memory.regions}
    for image in regions:
        if image.name == ROM_REGION and image.name not in have:
            if image.size > MAX_ROM_BYTES:
                raise SnapshotError(f"ROM region of {image.size} bytes is too large")
            board.map_bios(image.data)
    try:
        board.restore_layout(board_state)
    except StateError as error:
        raise _damaged("board", str(error)) from None
    layout = [(r.name, r.gpa, r.size, r.readonly) for r in board.memory.regions]
    wanted = [(r.name, r.gpa, r.size, r.readonly) for r in regions]
    if sorted(layout) != sorted(wanted):
        # The manifest's ram_size and its memory list disagree: an edited file.
        raise _damaged("memory", f"the regions {sorted(wanted)} do not make the board's "
                                 f"layout {sorted(layout)} (ram_size {board.ram_size})")
    by_name = {r.name: r for r in board.memory.regions}
    for image in regions:
        region = by_name[image.name]
        region.backing[region.offset:region.offset + region.size] = image.data


def restore_snapshot(snapshot: Snapshot, engine: str | None = None, *,
                     serial_output: BinaryIO | None = None,
                     debugcon_output: BinaryIO | None = None, name: str = "vm0",
                     **vm_options: Any) -> VirtualMachine:
    """A new VM in the snapshot's state under `engine` (default: the snapshot's).

    Order matters: memory, then the board (clock first, so devices re-arm
    their timers at the same guest-time deadlines on the new engine's clock
    source; the PIC before the devices that re-drive IRQ lines), then the CPU.
    """
    from pyvmm.board.virtio import VirtioSpec
    from pyvmm.errors import ConfigError
    from pyvmm.vm import ImageSpec, VirtualMachine, republish_image

    listed = snapshot.extra.get("virtio", [])
    try:
        virtio = tuple(VirtioSpec.from_json(entry) for entry in listed) \
            if isinstance(listed, list) else None
    except ConfigError as error:
        raise _damaged("extra.virtio", str(error)) from None
    if virtio is None:
        raise _damaged("extra.virtio", "not a list")
    vm = VirtualMachine(engine=engine or snapshot.engine, ram_size=snapshot.ram_size,
                        serial_output=serial_output, debugcon_output=debugcon_output,
                        name=name, unmapped=snapshot.unmapped, virtio=virtio, **vm_options)
    try:
        _restore_memory(vm.board, snapshot.regions, snapshot.board)
        try:
            # A copy: two VMs restored from one in-memory snapshot share nothing.
            vm.board.set_state(copy.deepcopy(snapshot.board))
        except StateError as error:
            raise _damaged("board", str(error)) from None
        vm.engine.load_devices(copy.deepcopy(snapshot.board))
        try:
            vm.engine.set_state(snapshot.cpu.copy())
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise SnapshotError(f"CPU state does not fit engine {vm.engine_name!r} "
                                f"({type(error).__name__}: {_one_line(error)})") from None
        _restore_stats(vm.board, snapshot.stats)
        if snapshot.image:
            image = snapshot.image
            optional_path = {name: Path(image[name]) for name in ("initrd", "firmware")
                             if name in image}
            vm.image = ImageSpec(image["kind"], Path(image["path"]), image.get("cmdline", ""),
                                 image.get("label", ""),
                                 linux_entry=image.get("linux_entry", ENTRY_64), **optional_path)
            try:
                republish_image(vm.board, vm.image)
            except ImageError as error:
                raise SnapshotError(f"the VM boots its kernel again through the firmware "
                                    f"at each reset (--linux-entry {vm.image.linux_entry}), "
                                    f"from files that cannot be read now: {error}") from None
    except BaseException:
        vm.close()
        raise
    return vm


def switch_engine(vm: VirtualMachine, engine: str) -> tuple[VirtualMachine, Snapshot]:
    """Move a paused VM to `engine` in this process: snapshot, close, restore.

    The new VM writes to the same serial and debugcon outputs.  Returns it
    and the in-memory snapshot it was built from.
    """
    snapshot = take_snapshot(vm)
    serial, debugcon, name = vm.serial_output, vm.debugcon_output, vm.name
    vm.close()
    return restore_snapshot(snapshot, engine, serial_output=serial, debugcon_output=debugcon,
                            name=name), snapshot

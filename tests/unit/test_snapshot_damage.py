"""A damaged snapshot is refused with one line naming what is wrong (issue 12).

Semantic edits are re-sealed with a correct SHA-256, so what refuses them is
the field check against the hardware's ranges, not the digest; byte flips
anywhere in the file (the ZIP central directory included) must be refused by
some layer, always as one "snapshot damaged" line with exit status 2.
"""

from __future__ import annotations

import io
import json
import random
import zipfile

import pytest

from pyvmm import cli
from pyvmm.machine.stop import StopKind
from pyvmm.snapshot import DIGEST, MANIFEST, Snapshot, SnapshotError, _digest, take_snapshot
from pyvmm.vm import ImageSpec, VirtualMachine

HELLO_STATUS = 33  # the hello guest writes 16 to port 0xF4: (16 << 1) | 1


@pytest.fixture(scope="module")
def snapshot_bytes() -> bytes:
    vm = VirtualMachine(engine="interp", ram_size=4 << 20, serial_output=io.BytesIO())
    try:
        vm.load(ImageSpec.bundled("hello"))
        vm.engine.max_instructions = 120
        assert vm.run(30).kind is StopKind.PAUSED
        out = io.BytesIO()
        take_snapshot(vm).write(out)
        return out.getvalue()
    finally:
        vm.close()


def reseal(data: bytes, change) -> bytes:  # noqa: ANN001
    """The snapshot with `change(manifest)` applied and a valid digest."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(members[MANIFEST])
    change(manifest)
    memory = [(entry["member"], members[entry["member"]]) for entry in manifest["memory"]]
    manifest[DIGEST] = _digest(manifest, memory)
    members[MANIFEST] = json.dumps(manifest).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, body in members.items():
            archive.writestr(name, body)
    return out.getvalue()


def device(name: str, key: str, value):  # noqa: ANN001, ANN201
    return lambda m: m["board"]["devices"][name].__setitem__(key, value)


def pic(key: str, value):  # noqa: ANN001, ANN201
    return lambda m: m["board"]["devices"]["pic"]["master"].__setitem__(key, value)


def segment(key: str, value):  # noqa: ANN001, ANN201
    return lambda m: m["cpu"]["segments"]["cs"].__setitem__(key, value)


def periodic_zero(m: dict) -> None:
    state = m["board"]["devices"]["hypercall"]
    state["timer_period_ns"], state["timer_periodic"] = 0, True


# (edit, the field the one-line refusal must name) - issue 12, finding 5.
SEMANTIC_EDITS = {
    "cmos.ram of 3 bytes": (device("cmos", "ram", [0, 0, 0]), "cmos.ram"),
    "stats not numeric": (lambda m: m["stats"].__setitem__("wall_seconds", "soon"),
                          "wall_seconds"),
    "stats counter text": (lambda m: m["stats"]["counters"].setdefault("x", {}).__setitem__(
        "y", "many"), "counters.x.y"),
    "PV period 0, periodic": (periodic_zero, "timer_period_ns"),
    "irr 2**40": (pic("irr", 1 << 40), "pic.master.irr"),
    "imr -1": (pic("imr", -1), "pic.master.imr"),
    "UART backlog 10**6": (device("com1", "host_backlog", [65] * 10**6), "com1.host_backlog"),
    "UART ier 0x10": (device("com1", "ier", 0x10), "com1.ier"),
    "now_ns -5": (lambda m: m["board"]["clock"].__setitem__("now_ns", -5), "clock.now_ns"),
    "now_ns 1e30": (lambda m: m["board"]["clock"].__setitem__("now_ns", 10**30),
                    "clock.now_ns"),
    "now_ns float": (lambda m: m["board"]["clock"].__setitem__("now_ns", 1.5), "clock.now_ns"),
    "segment base 2**70": (segment("base", 1 << 70), "cpu.segments.cs.base"),
    "segment limit 'x'": (segment("limit", "x"), "cpu.segments.cs.limit"),
    "version 1.0": (lambda m: m.__setitem__("version", float(m["version"])), "version"),
    "version true": (lambda m: m.__setitem__("version", True), "version"),
    "PIT mode text": (lambda m: m["board"]["devices"]["pit"]["channels"][0].__setitem__(
        "mode", "2"), "pit.channels.0.mode"),
    "i8042 output 2 bytes": (device("i8042", "output", [[1, False], [2, False]]),
                             "i8042.output"),
    "unknown device field": (device("port92", "turbo", 1), "port92.turbo"),
    "device missing": (lambda m: m["board"]["devices"].pop("cmos"), "devices.cmos"),
    "stop kind unknown": (lambda m: m["board"].__setitem__("stop_request", {
        "kind": "EXPLODE", "message": "", "guest_status": None, "vector": None,
        "error_code": None}), "stop_request.kind"),
    "pending vector 300": (lambda m: m["cpu"].__setitem__("pending_interrupt", 300),
                           "cpu.pending_interrupt"),
    "ram size 3": (lambda m: m.__setitem__("ram_size", 3), "ram_size"),
    # Found by tests.fuzz snapshot-edits: a valid size that the memory list does not match.
    "ram size 8 MiB, memory of 4": (lambda m: m.__setitem__("ram_size", 8 << 20), "memory"),
    # Found by `python -m tests.fuzz --only snapshot-edits`: a key is named in the message.
    "field named newline": (device("debug-exit", "\n", None), "debug-exit.'\\n'"),
    "clock field named CR": (lambda m: m["board"]["clock"].__setitem__("a\rb", 1),
                             "clock.'a\\rb'"),
}


def restore_cli(tmp_path, data: bytes, capfd) -> tuple[int, str]:  # noqa: ANN001
    path = tmp_path / "vm.pvs"
    path.write_bytes(data)
    status = cli.main(["run", "--restore", str(path), "--engine", "interp", "--serial", "none",
                       "--timeout", "5"])
    return status, capfd.readouterr().err


@pytest.mark.parametrize("edit", sorted(SEMANTIC_EDITS))
def test_semantic_edit_refused_naming_the_field(snapshot_bytes, tmp_path, capfd, edit):
    change, field_name = SEMANTIC_EDITS[edit]
    status, err = restore_cli(tmp_path, reseal(snapshot_bytes, change), capfd)
    lines = err.strip().splitlines()
    assert status == cli.EXIT_USAGE, err
    assert len(lines) == 1 and lines[0].startswith("pyvmm: error: snapshot damaged: "), err
    assert field_name in lines[0], err


def test_resealed_unchanged_snapshot_still_restores(snapshot_bytes, tmp_path, capfd):
    """The checks refuse damage, not snapshots: the untouched state passes them."""
    status, err = restore_cli(tmp_path, reseal(snapshot_bytes, lambda m: None), capfd)
    assert status == HELLO_STATUS, err
    assert "debug-exit with status 33" in err


def test_an_edit_without_a_new_digest_is_refused(snapshot_bytes):
    with zipfile.ZipFile(io.BytesIO(snapshot_bytes)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(members[MANIFEST])
    manifest["cpu"]["rip"] += 1  # in range: only the digest can tell
    members[MANIFEST] = json.dumps(manifest).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, body in members.items():
            archive.writestr(name, body)
    with pytest.raises(SnapshotError, match="snapshot damaged: .*SHA-256"):
        Snapshot.read(io.BytesIO(out.getvalue()))


def test_byte_flips_anywhere_are_refused_in_one_line(snapshot_bytes):
    """Flips in the central directory (the last few hundred bytes) once gave
    NotImplementedError/RuntimeError tracebacks; every layer now answers alike."""
    rng = random.Random(12)
    size = len(snapshot_bytes)
    tail = max(0, size - 400)
    for trial in range(300):
        raw = bytearray(snapshot_bytes)
        where = rng.randrange(tail, size) if trial % 2 else rng.randrange(size)
        raw[where] ^= 1 << rng.randrange(8)
        try:
            Snapshot.read(io.BytesIO(bytes(raw)))
        except SnapshotError as error:
            assert str(error).startswith("snapshot damaged: ") and "\n" not in str(error)

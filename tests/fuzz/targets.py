"""The fuzz targets.  Each is a function of a hypothesis `settings` that runs
that many cases and returns its counts; pytest and `python -m tests.fuzz` both
call them.  A failing case raises (hypothesis shrinks it first)."""

from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyvmm import boot
from pyvmm.board.pc import PcBoard
from pyvmm.errors import ImageError, PyvmmError
from pyvmm.guests import BUNDLED_GUESTS, guest_path
from pyvmm.machine.clock import ClockSource
from pyvmm.paravirt import abi
from pyvmm.snapshot import DIGEST, MANIFEST, Snapshot, SnapshotError, _digest, restore_snapshot
from tests.fuzz.harness import apply, clone, device_table, json_state, make_board, operations

COUNTS: Counter[str] = Counter()
_BOARD, _ = make_board()
OPS = operations(_BOARD)


# Hypothesis keeps every example of one run in memory (its choice tree and each
# example's data: 53 of 54 traced MiB after 600 round-trip cases, which grew the
# 28,000-case run to 1.25 GB), so a long fuzz run is a series of runs of this many
# examples, each with its own seed.
CHUNK_EXAMPLES = 500


def _run(test: Callable[..., None], cases: int, seed: int | None) -> None:
    """`cases` examples of `test` (rounded up to equal runs), from `seed` (None: the
    same examples every time)."""
    from hypothesis import seed as with_seed

    runs = max(1, -(-cases // CHUNK_EXAMPLES))
    configured = settings(max_examples=-(-cases // runs), deadline=None, database=None,
                          suppress_health_check=list(HealthCheck), print_blob=True)(test)
    base = 0 if seed is None else seed
    for run in range(runs):
        with_seed(base + run)(configured)()


# -- devices through the buses ------------------------------------------------------

def devices(cases: int, seed: int | None = None) -> None:
    """Random traffic on every port the board maps: never an exception, and the
    board's state stays within every device's schema (set_state accepts it)."""
    @given(st.lists(OPS, min_size=20, max_size=200))
    def case(ops: list[tuple]) -> None:
        board, _ = make_board()
        try:
            for op in ops:
                apply(board, op)
            COUNTS["device operations"] += len(ops)
            clone(board)[0].close()  # the state it reached is a valid snapshot state
        finally:
            board.close()
    _run(case, cases, seed)


def roundtrip(cases: int, seed: int | None = None) -> None:
    """state -> fresh board -> state is equal for every device in the board's device
    table; then the same further traffic gives the same results on both."""
    @given(st.lists(OPS, min_size=10, max_size=120), st.lists(OPS, min_size=10, max_size=120))
    def case(before: list[tuple], after: list[tuple]) -> None:
        board, out = make_board()
        try:
            for op in before:
                apply(board, op)
            state = json_state(board)
            other, other_out = clone(board)
            try:
                restored = json_state(other)
                for name, _ in device_table(board):
                    assert restored["devices"][name] == state["devices"][name], name
                assert restored == state
                out.data.clear()
                for op in after:
                    mine, theirs = apply(board, op), apply(other, op)
                    COUNTS["round-trip operations"] += 2
                    assert mine == theirs, op
                assert json_state(other) == json_state(board)
                assert bytes(other_out.data) == bytes(out.data)
            finally:
                other.close()
        finally:
            board.close()
    _run(case, cases, seed)


def hypercalls(cases: int, seed: int | None = None) -> None:
    """Any registers at the hypercall port: RAX is a result or a known -errno."""
    known = {abi.error(code) for code in abi.ERROR_NAMES}

    @given(st.lists(st.tuples(st.integers(0, 9), st.lists(
        st.one_of(st.integers(0, (1 << 64) - 1), st.integers(0, 1 << 24),
                  st.sampled_from((abi.TIMER_MIN_PERIOD_NS, abi.TIMER_MAX_PERIOD_NS,
                                   abi.TIMER_PERIODIC, abi.CONSOLE_MAX_WRITE + 1))),
        min_size=4, max_size=4)), min_size=1, max_size=50))
    def case(calls: list[tuple[int, list[int]]]) -> None:
        board, _ = make_board()
        try:
            for number, args in calls:
                rax, _, _ = apply(board, ("hypercall", [number, *args]))  # type: ignore[misc]
                COUNTS["hypercalls"] += 1
                assert abi.as_signed(rax) >= 0 or rax in known, (number, args, hex(rax))
            assert board.clock.pending_timers <= 8
        finally:
            board.close()
    _run(case, cases, seed)


# -- loaders ---------------------------------------------------------------------------

_LOADERS = {"multiboot": lambda b, d: boot.load_multiboot(b, d, ""),
            "boot-sector": boot.load_boot_sector, "bios": boot.load_bios}
_IMAGES = {name: (guest.kind, guest_path(name).read_bytes())
           for name, guest in BUNDLED_GUESTS.items() if guest.kind in _LOADERS}


def loaders(cases: int, seed: int | None = None) -> None:
    """Mutated bundled images: loaded, or refused with one ImageError line."""
    @given(st.sampled_from(sorted(_IMAGES)), st.lists(st.tuples(
        st.integers(0, 1 << 16), st.integers(0, 255)), max_size=8),
        st.one_of(st.none(), st.integers(0, 1 << 16)))
    def case(name: str, flips: list[tuple[int, int]], cut: int | None) -> None:
        kind, image = _IMAGES[name]
        data = bytearray(image)
        for where, value in flips:
            if data:
                data[where % len(data)] = value
        if cut is not None:
            data = data[:cut]
        board = PcBoard(ram_size=4 << 20, clock_source=ClockSource.MANUAL)
        try:
            _LOADERS[kind](board, bytes(data))
            COUNTS["images loaded"] += 1
        except ImageError as error:
            assert "\n" not in str(error)
            COUNTS["images refused"] += 1
        finally:
            board.close()
    _run(case, cases, seed)


# -- the snapshot reader -------------------------------------------------------------------

_SNAPSHOT: bytes | None = None


def snapshot_bytes() -> bytes:
    global _SNAPSHOT
    if _SNAPSHOT is None:
        from pyvmm.snapshot import take_snapshot
        from pyvmm.vm import ImageSpec, VirtualMachine

        vm = VirtualMachine(engine="interp", ram_size=4 << 20, serial_output=io.BytesIO())
        try:
            vm.load(ImageSpec.bundled("hello"))
            vm.engine.max_instructions = 120
            vm.run(30)
            out = io.BytesIO()
            take_snapshot(vm).write(out)
            _SNAPSHOT = out.getvalue()
        finally:
            vm.close()
    return _SNAPSHOT


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def reseal(members: dict[str, bytes], manifest: dict) -> bytes:
    memory = [(e["member"], members.get(e["member"], b"")) for e in manifest.get("memory", [])
              if isinstance(e, dict) and isinstance(e.get("member"), str)]
    try:
        manifest[DIGEST] = _digest(manifest, memory)
    except (TypeError, ValueError):
        pass
    members = dict(members, **{MANIFEST: json.dumps(manifest).encode()})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, body in members.items():
            archive.writestr(name, body)
    return out.getvalue()


def _load_and_restore(data: bytes) -> None:
    """Refused with one 'snapshot damaged' line, or restored (then it must run)."""
    try:
        snapshot = Snapshot.read(io.BytesIO(data))
        vm = restore_snapshot(snapshot, "interp")
    except SnapshotError as error:
        text = str(error)
        assert text.startswith("snapshot damaged: ") and "\n" not in text, text
        COUNTS["snapshots refused"] += 1
        return
    except PyvmmError as error:  # e.g. a RAM size the board refuses: still one line
        assert "\n" not in str(error)
        COUNTS["snapshots refused"] += 1
        return
    try:
        vm.run(0.05)
        COUNTS["snapshots restored"] += 1
    finally:
        vm.close()


def snapshot_flips(cases: int, seed: int | None = None) -> None:
    @given(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
                    min_size=1, max_size=4), st.booleans())
    def case(flips: list[tuple[float, int]], tail: bool) -> None:
        raw = bytearray(snapshot_bytes())
        span = min(len(raw), 600) if tail else len(raw)
        for where, bit in flips:
            raw[len(raw) - span + int(where * span)] ^= 1 << bit
        COUNTS["corrupted snapshots"] += 1
        _load_and_restore(bytes(raw))
    _run(case, cases, seed)


_JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-(1 << 80), 1 << 80),
                               st.floats(allow_nan=False), st.text(max_size=5)),
                     lambda inner: st.one_of(st.lists(inner, max_size=4),
                                             st.dictionaries(st.text(max_size=5), inner,
                                                             max_size=3)), max_leaves=6)


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node[:20]):
            found += _paths(value, (*prefix, index))
    return found


_PATHS: list[tuple] | None = None


def snapshot_edits(cases: int, seed: int | None = None) -> None:
    """Any field of the manifest replaced by any JSON value, re-sealed with a
    valid digest: refused in one line naming a field, or restored and run."""
    global _PATHS
    members = _members(snapshot_bytes())
    manifest = json.loads(members[MANIFEST])
    if _PATHS is None:
        _PATHS = [p for p in _paths(manifest) if p and p[0] != "memory" or len(p) > 2]

    @given(st.lists(st.tuples(st.sampled_from(_PATHS), _JSON, st.booleans()), min_size=1,
                    max_size=3))
    def case(edits: list[tuple[tuple, object, bool]]) -> None:
        edited = json.loads(members[MANIFEST])
        for path, value, delete in edits:
            node = edited
            try:
                for key in path[:-1]:
                    node = node[key]
                if delete and isinstance(node, dict):
                    node.pop(path[-1], None)
                else:
                    node[path[-1]] = value
            except (KeyError, IndexError, TypeError):
                continue
        COUNTS["edited snapshots"] += 1
        _load_and_restore(reseal(members, edited))
    _run(case, cases, seed)


# -- the GDB remote protocol ---------------------------------------------------------

class _SilentClient:
    """Stands in for gdb's socket: the stub's unsolicited packets are counted, not sent."""

    alive = True
    no_ack = False

    def send(self, payload: bytes) -> None:
        COUNTS["gdb packets sent unsolicited"] += 1

    def close(self) -> None:
        pass


GDB_LETTERS = list(b"?gGpPmMXZzHTqQvDkcsCS") + list(b"xyz!\x00\xff")


def gdb_packets(cases: int, seed: int | None = None) -> None:
    """Any byte stream through the packet decoder (bad checksums, oversized lengths,
    a stream cut mid-packet), then every packet it yields, and random command letters
    with random arguments, through the stub's dispatcher on a live interpreter VM:
    only the stub's own resume/detach/kill signals may come out, never an exception."""
    from pyvmm.debug.gdbstub import GdbStub, _Detach, _Kill, _Resume
    from pyvmm.debug.rsp import PacketDecoder, encode_packet
    from pyvmm.debug.target import DebugTarget
    from pyvmm.vm import ImageSpec, VirtualMachine

    vm = VirtualMachine(engine="interp", ram_size=4 << 20)
    vm.load(ImageSpec.bundled("hello"))
    server = GdbStub(vm, "tcp::0", wait_for_client=False)
    target = DebugTarget(vm)
    server.client = _SilentClient()

    def dispatch(payload: bytes) -> None:
        try:
            reply = server._dispatch(payload, target)
        except (_Resume, _Detach, _Kill):
            COUNTS["gdb control signals"] += 1
            return
        finally:
            target.remove_all()
            server.client.no_ack = False
        assert reply is None or isinstance(reply, bytes), reply
        COUNTS["gdb commands dispatched"] += 1

    @given(st.binary(max_size=300), st.lists(st.tuples(st.sampled_from(GDB_LETTERS),
                                                       st.binary(max_size=48)), max_size=8))
    def case(stream: bytes, commands: list[tuple[int, bytes]]) -> None:
        decoder = PacketDecoder(max_packet=256)
        framed = stream + b"".join(encode_packet(bytes((letter,)) + rest)
                                   for letter, rest in commands)
        for event in decoder.feed(framed[:len(framed) // 2]) + decoder.feed(
                framed[len(framed) // 2:]):
            COUNTS["gdb decoder events"] += 1
            payload = getattr(event, "payload", None)
            if payload is not None:
                dispatch(payload)
        COUNTS["gdb byte streams"] += 1

    try:
        _run(case, cases, seed)
    finally:
        server.client = None
        server.close()
        vm.close()


TARGETS: dict[str, Callable[[int, int | None], None]] = {
    "gdb-packets": gdb_packets,
    "devices": devices, "roundtrip": roundtrip, "hypercalls": hypercalls,
    "loaders": loaders, "snapshot-flips": snapshot_flips, "snapshot-edits": snapshot_edits,
}

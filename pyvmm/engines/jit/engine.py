"""The binary-translation engine (`--engine jit`): guest basic blocks as compiled Python.

Same virtual CPU as the interpreter (its `Cpu`, MMU, exception delivery,
interrupt and clock handling are reused unchanged through subclassing); only
dispatch differs.  Instead of one handler call per instruction, the code at
CS:RIP is translated once into a block function (translate.py), cached per
code context (CS base, CS limit, code size, CPL: the interpreter's decode-cache
key) and dropped when the guest writes to a physical page it came from, or
when the address space changes (CR0/CR3/CR4 writes, INVLPG).

Tiering: code is interpreted until dispatch has reached its address
`hot_after` times (HOT_AFTER), then translated; a block that does not fit the
rest of a batch hands the batch's last instructions to the interpreter, so no
translation starts in the middle of a block.

Code that keeps rewriting itself (SMC_LIMIT translations of a page dropped by
writes) is left to the interpreter from then on, so it never runs slower than
interpreted.

Determinism: a block runs only when it fits in the instruction budget of the
current batch; otherwise the engine single-steps through the interpreter's
handlers.  So batches end, timers fire and interrupts are taken at exactly the
same instruction counts as under `--engine interp`, and guest output matches
byte for byte.  Anything the translator cannot handle (legacy 8086/80286
models, an instruction without a builder, a fetch fault) also single-steps.
"""

from __future__ import annotations

from pyvmm.cpu.state import FLAG_TF, CpuState
from pyvmm.engines.interp.cpu import CS
from pyvmm.engines.interp.engine import InterpreterEngine
from pyvmm.engines.interp.faults import CpuFault
from pyvmm.engines.interp.signals import EndBatch
from pyvmm.engines.jit.translate import Block, BlockExit, BlockState, Translator
from pyvmm.machine.hooks import HookKind
from pyvmm.machine.stop import StopReason

_NO_BLOCK = (None, 0)  # cache entry for code the translator leaves to the interpreter
# Translations a physical page may lose to guest writes before the code on it is left
# to the interpreter: code that keeps rewriting itself would otherwise be translated
# again after every write and run slower than interpreted (binary translators such as
# QEMU's TCG likewise fall back to interpreting such pages).
SMC_LIMIT = 32
# Tiering: code is interpreted until dispatch has reached its address this many times,
# then translated.  A translation costs about as much as interpreting the block a few
# hundred times (decode, semantic capture, Python compile), and most of a kernel's
# boot code runs a handful of times; see docs/PERFORMANCE.md, "Linux boot".  1 =
# translate on first sight (the translator's own tests and the differential tester).
HOT_AFTER = 8
# Parked translations (see _Context) kept per code offset, and in all: a guest that
# runs ever new processes at the same virtual addresses on other frames, or code at
# ever new addresses, must not grow the cache without limit.  Past the total the
# parked blocks are forgotten (they are only a cache: a miss translates again).
PARKED_PER_OFFSET = 8
PARKED_LIMIT = 1 << 16


class _Record:
    """A translated block's cache entry and the (virtual, physical) pages it came from."""

    __slots__ = ("entry", "mapping", "alive")

    def __init__(self, entry: tuple, mapping: frozenset[tuple[int, int]]) -> None:
        self.entry = entry
        self.mapping = mapping
        self.alive = True  # False once a write to one of its frames dropped it


class _Context:
    """Blocks of one code context (CS base, CS limit, code size, CPL).

    `live` is what the run loop looks up (offset -> entry).  When the address
    space changes, live blocks are *parked* by offset; a later miss at that
    offset takes one back if its virtual pages still map the same frames
    (the frames' bytes are guarded by the write invalidation), so processes
    that share virtual addresses keep their translations across CR3 switches.
    """

    def __init__(self) -> None:
        self.live: dict[int, tuple] = {}
        self.records: dict[int, _Record] = {}
        self.parked: dict[int, list[_Record]] = {}
        self.parked_total = 0  # records in `parked`, alive or dropped since
        self.heat: dict[int, int] = {}  # offset -> times reached before it is translated

    def park(self) -> None:
        parked = self.parked
        for rip, record in self.records.items():
            if record.alive:
                old = parked.get(rip)
                if old is None:
                    parked[rip] = [record]
                    self.parked_total += 1
                else:  # the newest alive ones, this one last
                    kept = [r for r in old if r.alive][1 - PARKED_PER_OFFSET:]
                    kept.append(record)
                    self.parked_total += len(kept) - len(old)
                    parked[rip] = kept
        if self.parked_total > PARKED_LIMIT:
            parked.clear()
            self.parked_total = 0
        self.records.clear()
        self.live.clear()
        self.heat.clear()


class JitEngine(InterpreterEngine):
    """Emulation by binary translation: one compiled Python function per guest block."""

    name = "jit"

    def __init__(self, board, cpu_model: str = "x86-64") -> None:  # noqa: ANN001
        super().__init__(board, cpu_model)
        cpu = self.cpu
        self.block_state = BlockState()
        self.smc = [False]
        self.translator = Translator(cpu, self.decoder.fetch, self.block_state, self.smc)
        self.contexts: dict[tuple[int, int, int, int], _Context] = {}
        self.context = _Context()
        self.blocks: dict[int, tuple] = self.context.live
        self.keep_source = False  # tests: remember each block's generated source
        self.sources: dict[int, str] = {}
        self.translated = 0
        self.invalidations = 0
        self.executions = 0
        self.fallback_steps = 0
        self.unparked = 0
        self.smc_drops: dict[int, int] = {}  # physical page -> translations writes dropped
        self.smc_pages: set[int] = set()  # pages whose code is interpreted from now on
        self.smc_interpreted = 0
        self.block_bytes: dict[object, int] = {}  # block function -> size, for block hooks
        self.hot_after = HOT_AFTER
        # Chain onto the interpreter's hooks (its decode cache installed them).
        inner_context, inner_flush = cpu.on_context_change, cpu.on_address_space_change

        def on_context_change() -> None:
            inner_context()
            self._select_context()

        def on_address_space_change() -> None:
            inner_flush()
            self._flush()

        cpu.on_context_change = on_context_change
        cpu.on_address_space_change = on_address_space_change
        self._select_context()

    # -- the block cache -----------------------------------------------------
    def _select_context(self) -> None:
        cpu = self.cpu
        key = cpu.code_context()
        context = self.contexts.get(key)
        if context is None:
            context = self.contexts[key] = _Context()
        self.context = context
        self.blocks = context.live

    def _flush(self) -> None:
        """The address space changed: park every block until its pages are seen mapped again."""
        for context in self.contexts.values():
            context.park()

    def _reset(self) -> None:
        """Forget every translation (memory may have changed behind the CPU's back)."""
        self.invalidations += sum(len(c.live) + sum(map(len, c.parked.values()))
                                  for c in self.contexts.values())
        self.contexts.clear()
        self.smc_drops.clear()
        self.smc_pages.clear()
        self._select_context()

    # -- hooks ---------------------------------------------------------------
    def _hooks_changed(self) -> None:
        """Code hooks: blocks on the pages they cover are not translated (those
        instructions single-step through the interpreter's hooked path); block
        hooks are called at each block's dispatch.  So retranslate everything."""
        super()._hooks_changed()
        self.block_bytes.clear()
        # A loop block runs many guest basic blocks per dispatch: with block hooks,
        # translate straight-line blocks only, so each hook call is one basic block.
        self.translator.loops = not self._block_hooks()
        self._reset()

    def _hooked_code(self, rip: int) -> bool:
        """Whether a code hook covers the page of CS:rip (a block never leaves its
        first instruction's page: translate.py)."""
        hooks = self.hooks
        if hooks is None or not hooks.by_kind[HookKind.CODE]:
            return False
        cpu = self.cpu
        return hooks.covers_page((HookKind.CODE,), ((cpu.seg_base[CS] + rip) & cpu.lin_mask)
                                 >> 12)

    def _block_hooks(self) -> bool:
        return self.hooks is not None and bool(self.hooks.by_kind[HookKind.BLOCK])

    def _block_hook(self, fn: object) -> None:
        cpu = self.cpu
        hooks = self.hooks
        self._fall_through = None  # the next single-stepped instruction starts a block
        if hooks is not None and hooks.by_kind[HookKind.BLOCK]:
            hooks.block((cpu.seg_base[CS] + cpu.rip) & cpu.lin_mask,
                        self.block_bytes.get(fn, 0))

    def set_state(self, state: CpuState) -> None:
        super().set_state(state)
        self._reset()  # the interpreter forgot its code pages: so do we

    def _unpark(self, rip: int) -> tuple | None:
        """A parked block for CS:rip whose virtual pages still map the same frames."""
        records = self.context.parked.get(rip)
        if not records:
            return None
        cpu = self.cpu
        for record in records:
            if not record.alive:
                continue
            try:
                same = all(cpu.fetch_physical_page(vpn << 12) == ppn
                           for vpn, ppn in record.mapping)
            except CpuFault:
                same = False
            if same:
                records.remove(record)
                self.context.parked_total -= 1
                self.context.live[rip] = record.entry
                self.context.records[rip] = record
                self.unparked += 1
                return record.entry
        return None

    def _translate(self) -> tuple:
        cpu = self.cpu
        if cpu.legacy:
            return _NO_BLOCK  # 8086/80286 decoding quirks live in the interpreter's decoder
        rip = cpu.rip
        entry = self._unpark(rip)
        if entry is not None:
            return entry
        if self.hot_after > 1:
            heat = self.context.heat
            seen = heat.get(rip, 0) + 1
            if seen < self.hot_after:
                heat[rip] = seen  # cold: interpret it, count again next time
                return _NO_BLOCK
            del heat[rip]
        if self._hooked_code(rip):
            self.context.live[rip] = _NO_BLOCK  # code hooks see each instruction: step it
            return _NO_BLOCK
        if self.smc_pages:
            try:
                ppn = cpu.fetch_physical_page((cpu.seg_base[CS] + rip) & cpu.lin_mask)
            except CpuFault:
                ppn = None
            if ppn in self.smc_pages:
                self.context.live[rip] = _NO_BLOCK  # self-modifying: interpret it
                return _NO_BLOCK
        block = self.translator.translate()
        if block is None:
            return _NO_BLOCK  # fetch fault: let the interpreter raise it
        entry = (block.fn, block.length) if block.fn is not None else (None, 0)
        if block.fn is not None and self._block_hooks():
            self.block_bytes[block.fn] = block.size
        context = self.context
        record = _Record(entry, block.pages)
        context.live[rip] = entry
        context.records[rip] = record
        if block.fn is not None:
            self.translated += 1
            if self.keep_source:
                self.sources[rip] = block.source

        def drop(ppn: int, context: _Context = context, rip: int = rip,
                 record: _Record = record, engine: JitEngine = self) -> None:
            if record.alive:
                record.alive = False
                engine.invalidations += 1
                if context.live.get(rip) is record.entry:
                    del context.live[rip]
                    del context.records[rip]
                drops = engine.smc_drops[ppn] = engine.smc_drops.get(ppn, 0) + 1
                if drops >= SMC_LIMIT and ppn not in engine.smc_pages:
                    engine.smc_pages.add(ppn)
                    engine.smc_interpreted += 1
            engine.smc[0] = True

        for ppn in {ppn for _, ppn in block.pages}:
            cpu.mark_code_page(ppn, lambda ppn=ppn: drop(ppn))
        return entry

    # -- running -------------------------------------------------------------
    def _run_batch(self, budget: int) -> StopReason | None:
        """Run up to `budget` instructions, a block at a time where the block fits.

        EndBatch ends the batch after the instruction that raised it, as in the
        interpreter.  Any other exception out of a block (a fault, INT n, ...) is
        handed to the interpreter's own one-instruction path (`_replay`), so its
        delivery and instruction accounting are exactly the interpreter's.
        """
        cpu = self.cpu
        if budget <= 1 or cpu.legacy or cpu.flags & FLAG_TF:
            return super()._run_batch(budget)
        start = budget
        decode = self.decoder.decode
        translate = self._translate
        state = self.block_state
        block_hooks = self._block_hooks()
        smc = self.smc
        smc[0] = False
        in_block = False
        executions = steps = 0
        try:
            while True:
                try:
                    while budget > 0:
                        entry = self.blocks.get(cpu.rip)
                        if entry is None:
                            entry = translate()
                        fn, length = entry
                        if length and length <= budget:
                            if block_hooks:
                                self._block_hook(fn)
                            in_block = True
                            budget -= fn(budget)
                            in_block = False
                            executions += 1
                            continue
                        if length:
                            # The block does not fit: the batch's last instructions are
                            # interpreted (none of them starts a translation mid-block).
                            while budget > 0:
                                handler = cpu.icache.get(cpu.rip)
                                if handler is None:
                                    handler = decode()
                                handler()
                                budget -= 1
                                steps += 1
                            break
                        handler = cpu.icache.get(cpu.rip)
                        if handler is None:
                            handler = decode()
                        handler()
                        budget -= 1
                        steps += 1
                    break
                except BlockExit as signal:
                    # Self-modifying code: the rest of the block may be stale.
                    signal.__traceback__ = None  # shared instance: each raise adds to it (_replay)
                    budget -= state.done + 1
                    in_block = False
                    executions += 1
                    smc[0] = False
        except EndBatch as signal:  # the instruction completed; the run loop must look around
            signal.__traceback__ = None  # shared instance: each raise adds to it (_replay)
            budget -= state.done + 1 if in_block else 1
            if in_block:
                executions += 1
        except BaseException as exc:  # noqa: BLE001 - replayed through the interpreter
            if in_block:
                budget -= state.done
                executions += 1
            self.instructions += start - budget
            return self._replay(exc)
        finally:
            self.executions += executions + state.segments
            state.segments = 0
            self.fallback_steps += steps
        self.instructions += start - budget
        return None

    def _replay(self, exc: BaseException) -> StopReason | None:
        """Let the interpreter's run-batch handle `exc` as if its handler at CS:RIP raised it."""
        cpu = self.cpu
        saved = cpu.icache

        # Shared signal instances (END_BATCH, an INT n's SoftwareInterrupt) are raised
        # again and again: drop the old traceback so it does not grow with every raise.
        exc.with_traceback(None)

        def raiser() -> None:
            raise exc

        temporary = {cpu.rip: raiser}
        cpu.icache = temporary
        try:
            return super()._run_batch(1)
        finally:
            if cpu.icache is temporary:  # delivery may have switched the code context
                cpu.icache = saved

    def run(self, timeout: float | None = None) -> StopReason:
        base = (self.translated, self.executions, self.invalidations, self.fallback_steps,
                self.unparked, self.smc_interpreted)
        try:
            return super().run(timeout)
        finally:
            stats = self.board.stats
            for key, now, then in zip(("blocks translated", "block executions",
                                       "invalidations", "fallback steps", "unparked",
                                       "self-modifying pages interpreted"),
                                      (self.translated, self.executions, self.invalidations,
                                       self.fallback_steps, self.unparked,
                                       self.smc_interpreted), base, strict=True):
                if now - then:
                    stats.count("jit", key, now - then)

    def translation_of(self, rip: int) -> Block | None:
        """Debug aid: translate the code at `rip` in the current context (not cached)."""
        saved = self.cpu.rip
        self.cpu.rip = rip
        try:
            return self.translator.translate()
        finally:
            self.cpu.rip = saved

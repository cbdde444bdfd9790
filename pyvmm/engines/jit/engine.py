"""The binary-translation engine (`--engine jit`): guest basic blocks as compiled Python.

Same virtual CPU as the interpreter (its `Cpu`, MMU, exception delivery,
interrupt and clock handling are reused unchanged through subclassing); only
dispatch differs.  Instead of one handler call per instruction, the code at
CS:RIP is translated once into a block function (translate.py), cached per
code context (CS base, CS limit, code size, CPL: the interpreter's decode-cache
key) and dropped when the guest writes to a physical page it came from, or
when the address space changes (CR0/CR3/CR4 writes, INVLPG).

Determinism: a block runs only when it fits in the instruction budget of the
current batch; otherwise the engine single-steps through the interpreter's
handlers.  So batches end, timers fire and interrupts are taken at exactly the
same instruction counts as under `--engine interp`, and guest output matches
byte for byte.  Anything the translator cannot handle (legacy 8086/80286
models, an instruction without a builder, a fetch fault) also single-steps.
"""

from __future__ import annotations

from pyvmm.cpu.state import FLAG_TF
from pyvmm.engines.base import StopKind, StopReason
from pyvmm.engines.interp.cpu import CS
from pyvmm.engines.interp.engine import InterpreterEngine, TripleFault
from pyvmm.engines.interp.faults import CpuFault
from pyvmm.engines.interp.signals import EndBatch, SoftwareInterrupt
from pyvmm.engines.jit.translate import Block, BlockExit, BlockState, Translator

_NO_BLOCK = (None, 0)  # cache entry for code the translator leaves to the interpreter


class JitEngine(InterpreterEngine):
    """Emulation by binary translation: one compiled Python function per guest block."""

    name = "jit"

    def __init__(self, board, cpu_model: str = "x86-64") -> None:  # noqa: ANN001
        super().__init__(board, cpu_model)
        cpu = self.cpu
        self.block_state = BlockState()
        self.smc = [False]
        self.translator = Translator(cpu, self.decoder.fetch, self.block_state, self.smc)
        self.contexts: dict[tuple[int, int, int, int], dict[int, tuple]] = {}
        self.blocks: dict[int, tuple] = {}
        self.keep_source = False  # tests: remember each block's generated source
        self.sources: dict[int, str] = {}
        self.translated = 0
        self.invalidations = 0
        self.executions = 0
        self.fallback_steps = 0
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
        key = (cpu.seg_base[CS], cpu.seg_hi[CS], cpu.code_bits, cpu.cpl)
        blocks = self.contexts.get(key)
        if blocks is None:
            blocks = self.contexts[key] = {}
        self.blocks = blocks

    def _flush(self) -> None:
        """The address space changed: every translation goes (the code pages were cleared)."""
        dropped = sum(len(blocks) for blocks in self.contexts.values())
        self.invalidations += dropped
        for blocks in self.contexts.values():
            blocks.clear()

    def _translate(self) -> tuple:
        cpu = self.cpu
        if cpu.legacy:
            return _NO_BLOCK  # 8086/80286 decoding quirks live in the interpreter's decoder
        block = self.translator.translate()
        if block is None:
            return _NO_BLOCK  # fetch fault: let the interpreter raise it
        entry = (block.fn, block.length) if block.fn is not None else _NO_BLOCK
        blocks = self.blocks
        rip = cpu.rip
        blocks[rip] = entry
        if block.fn is not None:
            self.translated += 1
            if self.keep_source:
                self.sources[rip] = block.source

        def drop(blocks: dict[int, tuple] = blocks, rip: int = rip, entry: tuple = entry,
                 engine: JitEngine = self) -> None:
            if blocks.get(rip) is entry:
                del blocks[rip]
                engine.invalidations += 1
            engine.smc[0] = True

        for ppn in block.pages:
            cpu.mark_code_page(ppn, drop)
        return entry

    # -- running -------------------------------------------------------------
    def _run_batch(self, budget: int) -> StopReason | None:
        """Run up to `budget` instructions, a block at a time where the block fits."""
        cpu = self.cpu
        if cpu.flags & FLAG_TF:
            return super()._run_batch(budget)  # single-stepping guest: one at a time
        start = budget
        decode = self.decoder.decode
        translate = self._translate
        state = self.block_state
        smc = self.smc
        smc[0] = False
        inflight = 0
        executions = steps = 0
        try:
            try:
                while True:
                    try:
                        while budget > 0:
                            entry = self.blocks.get(cpu.rip)
                            if entry is None:
                                entry = translate()
                            fn, length = entry
                            if length and length <= budget:
                                inflight = length
                                budget -= length
                                fn()
                                inflight = 0
                                executions += 1
                            else:
                                budget -= 1
                                steps += 1
                                handler = cpu.icache.get(cpu.rip)
                                if handler is None:
                                    handler = decode()
                                handler()
                        break
                    except BlockExit:
                        # Self-modifying code: the rest of the block may be stale.
                        budget += inflight - (state.done + 1)
                        inflight = 0
                        executions += 1
                        smc[0] = False
            except EndBatch:
                budget += inflight - (state.done + 1) if inflight else 0
            except SoftwareInterrupt as interrupt:
                budget += inflight - (state.done + 1) if inflight else 0
                self._software_interrupt(interrupt)
            except CpuFault as fault:
                budget += inflight - (state.done + 1) if inflight else 0
                inflight = 0
                if fault.vector in self.intercept_exceptions:
                    self.instructions += start - budget - 1
                    return StopReason(StopKind.EXCEPTION, f"{fault} at {self._where()}",
                                      vector=fault.vector, error_code=fault.error_code)
                self.deliver_fault(fault)
        except TripleFault as triple:
            self.instructions += start - budget
            return StopReason(StopKind.TRIPLE_FAULT, f"{triple.message} at {self._where()}")
        except CpuFault as fault:  # escaped delivery (e.g. intercept inside INT n)
            self.instructions += start - budget
            if fault.vector in self.intercept_exceptions:
                return StopReason(StopKind.EXCEPTION, f"{fault} at {self._where()}",
                                  vector=fault.vector, error_code=fault.error_code)
            return StopReason(StopKind.INTERNAL_ERROR, f"unhandled {fault} at {self._where()}")
        finally:
            self.executions += executions
            self.fallback_steps += steps
        self.instructions += start - budget
        return None

    def run(self, timeout: float | None = None) -> StopReason:
        base = (self.translated, self.executions, self.invalidations, self.fallback_steps)
        try:
            return super().run(timeout)
        finally:
            stats = self.board.stats
            for key, now, then in zip(("blocks translated", "block executions",
                                       "invalidations", "fallback steps"),
                                      (self.translated, self.executions, self.invalidations,
                                       self.fallback_steps), base):
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

"""The interpreter's software MMU: one page walker and a software TLB.

One walker serves the three paging modes of SDM Vol. 3A chapter 4: 32-bit
paging (§4.3, 4 MiB pages under CR4.PSE), PAE paging (§4.4, 2 MiB pages) and
4-level paging (§4.5, 2 MiB and 1 GiB pages).  They differ only in data —
entry size, index bits per level, which levels may map a page, which bits are
reserved — so each mode is a `PagingShape` (a tuple of `LevelSpec`) driving
the same loop.  Access rights follow §4.6, accessed/dirty bits §4.8, the
page-fault error code §4.7, TLB invalidation §4.10.4.

Choices where the hardware leaves room or the emulator has less to go on:

- MAXPHYADDR is `phys_bits`, by default what the interpreter's CPUID leaf
  0x80000008 reports (pyvmm.cpu.cpuid.PHYSICAL_ADDRESS_BITS).
- Accessed and dirty bits are written only when the walk succeeds (as Bochs and
  QEMU do); a faulting walk leaves the tables untouched.
- PAE PDPTEs are loaded by `Tlb.set_paging` (i.e. at MOV to CR3/CR0/CR4, as on
  hardware, §4.4.1), so a later change to the PDPT in memory is not seen until
  CR3 is reloaded.  `PageWalker.walk` called without `pdptes` reads them from
  memory at walk time.  Hardware raises #GP at MOV CR3 for a PDPTE with
  reserved bits set; `Tlb.pdptes_valid` lets the core do that check.  If it
  does not, the walk reports such a PDPTE as a reserved-bit #PF.
- A paging-structure entry whose physical address is not backed by RAM/ROM is
  treated as not present (the walker only has guest memory, not the MMIO bus).
- CR4.SMAP is not implemented (the walker does not see EFLAGS.AC); CR4.SMEP is.
- Protection keys and PCIDs are not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyvmm.cpu.cpuid import PHYSICAL_ADDRESS_BITS
from pyvmm.cpu.state import (
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    CR4_PGE,
    CR4_PSE,
    CR4_SMEP,
    EFER_LMA,
    EFER_NXE,
)
from pyvmm.engines.interp.faults import (
    PF,
    PF_FETCH,
    PF_PRESENT,
    PF_RESERVED,
    PF_USER,
    PF_WRITE,
    CpuFault,
)
from pyvmm.errors import GuestMemoryError
from pyvmm.machine.memory import GuestMemory
from pyvmm.stats import Stats

# Paging-structure entry bits (SDM Vol. 3A §4.3 Tables 4-4..4-6, §4.4, §4.5).
PTE_P = 1 << 0  # present
PTE_RW = 1 << 1  # 1: writes allowed
PTE_US = 1 << 2  # 1: user-mode accesses allowed
PTE_A = 1 << 5  # accessed (§4.8)
PTE_D = 1 << 6  # dirty, in the entry that maps a page (§4.8)
PTE_PS = 1 << 7  # page size: this entry maps a page (not in PML4Es / 4 KiB PTEs)
PTE_G = 1 << 8  # global, in the entry that maps a page (§4.10.2.4)
PTE_XD = 1 << 63  # execute-disable when IA32_EFER.NXE = 1 (PAE / 4-level only)

DEFAULT_PHYS_BITS = PHYSICAL_ADDRESS_BITS  # MAXPHYADDR (CPUID 8000_0008h EAX[7:0])

PAGE_SHIFT = 12
PAGE_MASK = 0xFFF


def _bits(high: int, low: int) -> int:
    """Mask of bits high..low inclusive (empty when high < low)."""
    if high < low:
        return 0
    return ((1 << (high + 1)) - 1) & ~((1 << low) - 1)


@dataclass(frozen=True)
class LevelSpec:
    """One level of a paging hierarchy.

    `shift` is the lowest linear-address bit of this level's index, so a page
    mapped here is 1 << shift bytes.  `fixed_reserved` are low bits that must
    be 0 in every entry of this level; `large_reserved` are the extra bits that
    must be 0 when the entry maps a page (PS=1).
    """

    name: str
    shift: int
    index_bits: int
    may_map_page: bool  # PS=1 maps a page here (always true at the last level)
    fixed_reserved: int = 0
    large_reserved: int = 0
    has_accessed: bool = True  # PAE PDPTEs have no A bit (bits 8:5 reserved)
    has_rights: bool = True  # PAE PDPTEs have no R/W, U/S, XD (reserved)
    reserved_to_bit: int | None = None  # this level's bits MAXPHYADDR..n are reserved

    @property
    def index_mask(self) -> int:
        return (1 << self.index_bits) - 1

    @property
    def is_last(self) -> bool:
        return self.shift == PAGE_SHIFT


@dataclass(frozen=True)
class PagingShape:
    """A paging mode: its levels (top first) and entry format."""

    name: str
    entry_size: int  # bytes per entry
    root_mask: int  # CR3 bits holding the top table's physical address
    levels: tuple[LevelSpec, ...]
    linear_bits: int  # linear-address bits translated
    wide_entries: bool  # 64-bit entries (physical addresses up to MAXPHYADDR, XD bit)
    reserved_to_bit: int | None  # bits MAXPHYADDR..n are reserved in every entry
    pse36: bool = False  # 4 MiB PDE holds physical address bits 39:32 in bits 20:13


# 32-bit paging (§4.3): CR3[31:12] -> PD (bits 31:22) -> PT (bits 21:12).
SHAPE_32 = PagingShape(
    name="32-bit", entry_size=4, root_mask=0xFFFFF000, linear_bits=32,
    wide_entries=False, reserved_to_bit=None,
    levels=(
        LevelSpec("PDE", 22, 10, may_map_page=False),
        LevelSpec("PTE", 12, 10, may_map_page=True),
    ),
)
# 32-bit paging with CR4.PSE=1: a PDE with PS=1 maps a 4 MiB page (Table 4-5);
# bit 21 is reserved and bits 20:13 are physical-address bits 39:32 (PSE-36).
SHAPE_32_PSE = PagingShape(
    name="32-bit+PSE", entry_size=4, root_mask=0xFFFFF000, linear_bits=32,
    wide_entries=False, reserved_to_bit=None, pse36=True,
    levels=(
        LevelSpec("PDE", 22, 10, may_map_page=True, large_reserved=_bits(21, 21)),
        LevelSpec("PTE", 12, 10, may_map_page=True),
    ),
)
# PAE paging (§4.4): CR3[31:5] -> 4 PDPTEs (bits 31:30) -> PD (29:21) -> PT (20:12).
# PDPTE bits 2:1 and 8:5 are reserved (Table 4-8); bits 62:MAXPHYADDR are
# reserved in PDEs/PTEs (Tables 4-9..4-11), 63:MAXPHYADDR in PDPTEs.
SHAPE_PAE = PagingShape(
    name="PAE", entry_size=8, root_mask=0xFFFFFFE0, linear_bits=32,
    wide_entries=True, reserved_to_bit=62,
    levels=(
        LevelSpec("PDPTE", 30, 2, may_map_page=False, fixed_reserved=_bits(8, 5) | _bits(2, 1),
                  has_accessed=False, has_rights=False, reserved_to_bit=63),
        LevelSpec("PDE", 21, 9, may_map_page=True, large_reserved=_bits(20, 13)),
        LevelSpec("PTE", 12, 9, may_map_page=True),
    ),
)
# 4-level paging (§4.5): CR3[M-1:12] -> PML4 (47:39) -> PDPT (38:30) -> PD (29:21)
# -> PT (20:12).  PS is reserved in PML4Es; bits 51:MAXPHYADDR reserved
# everywhere; 1 GiB PDPTE bits 29:13 and 2 MiB PDE bits 20:13 reserved.
SHAPE_4LEVEL = PagingShape(
    name="4-level", entry_size=8, root_mask=0, linear_bits=48,  # root_mask set per MAXPHYADDR
    wide_entries=True, reserved_to_bit=51,
    levels=(
        LevelSpec("PML4E", 39, 9, may_map_page=False, fixed_reserved=PTE_PS),
        LevelSpec("PDPTE", 30, 9, may_map_page=True, large_reserved=_bits(29, 13)),
        LevelSpec("PDE", 21, 9, may_map_page=True, large_reserved=_bits(20, 13)),
        LevelSpec("PTE", 12, 9, may_map_page=True),
    ),
)


def paging_shape(cr4: int, efer: int) -> PagingShape:
    """The paging mode selected by CR4.PAE, IA32_EFER.LMA and CR4.PSE (SDM §4.1.1)."""
    if cr4 & CR4_PAE:
        return SHAPE_4LEVEL if efer & EFER_LMA else SHAPE_PAE
    return SHAPE_32_PSE if cr4 & CR4_PSE else SHAPE_32


@dataclass(frozen=True)
class _LevelMasks:
    """A level's reserved-bit masks resolved for one MAXPHYADDR and NXE setting."""

    spec: LevelSpec
    table_reserved: int  # reserved bits in an entry referencing a table
    page_reserved: int  # reserved bits in an entry mapping a page
    address_mask: int  # bits giving the next table's / the page's physical address


@dataclass(slots=True)
class WalkResult:
    """A successful translation of one linear address.

    `phys_page_base` is the base of the whole page (4 KiB, 2 MiB, 4 MiB or
    1 GiB); `writable`/`user`/`executable` are the rights combined over all
    levels (R/W and U/S ANDed, XD ORed when NXE=1; §4.6); `global_` is the G
    bit of the mapping entry with CR4.PGE=1; `dirty` the D bit after the walk.
    """

    phys_page_base: int
    page_size: int
    writable: bool
    user: bool
    executable: bool
    global_: bool
    dirty: bool

    def physical(self, linear: int) -> int:
        """The physical address of `linear` within this page."""
        return self.phys_page_base | (linear & (self.page_size - 1))

    def frame(self, linear: int) -> int:
        """The 4 KiB physical frame holding `linear` (what the TLB caches)."""
        return self.phys_page_base | (linear & (self.page_size - 1) & ~PAGE_MASK)


def access_denied(writable: bool, user_page: bool, executable: bool, access: int, user: bool,
                  wp: bool, smep: bool) -> bool:
    """True when the rights of a page forbid `access` (SDM Vol. 3A §4.6.1).

    User-mode accesses need U/S=1, and R/W=1 for writes.  Supervisor writes to
    read-only pages fault only with CR0.WP=1; supervisor instruction fetches
    from user pages fault with CR4.SMEP=1.  Fetches from XD pages always fault.
    """
    if access & PF_FETCH:
        if not executable:
            return True
        return (not user_page) if user else (smep and user_page)
    if user:
        if not user_page:
            return True
        return bool(access & PF_WRITE) and not writable
    return bool(access & PF_WRITE) and not writable and wp


class PageWalker:
    """Translates linear addresses by walking the guest's paging structures."""

    def __init__(self, memory: GuestMemory, stats: Stats,
                 phys_bits: int = DEFAULT_PHYS_BITS) -> None:
        self.memory = memory
        self.stats = stats
        self.phys_bits = phys_bits
        self._masks: dict[tuple[str, bool], tuple[_LevelMasks, ...]] = {}
        for shape in (SHAPE_32, SHAPE_32_PSE, SHAPE_PAE, SHAPE_4LEVEL):
            for nxe in (False, True):
                self._masks[shape.name, nxe] = self._resolve(shape, nxe)
        self._root_4level = _bits(phys_bits - 1, 12)

    def _resolve(self, shape: PagingShape, nxe: bool) -> tuple[_LevelMasks, ...]:
        m = self.phys_bits
        resolved = []
        for spec in shape.levels:
            if shape.wide_entries:
                top = spec.reserved_to_bit if spec.reserved_to_bit is not None \
                    else shape.reserved_to_bit
                reserved = _bits(top, m) | spec.fixed_reserved
                if not nxe and spec.has_rights:
                    reserved |= PTE_XD  # XD is reserved unless IA32_EFER.NXE = 1
                address = _bits(m - 1, 12)
                page_reserved = reserved | spec.large_reserved
            else:
                reserved = spec.fixed_reserved
                address = 0xFFFFF000
                page_reserved = reserved | spec.large_reserved
                if shape.pse36 and spec.shift == 22:
                    # PDE bits 20:13 carry physical bits 39:32; those >= MAXPHYADDR are reserved.
                    page_reserved |= _bits(20, 13 + min(m, 40) - 32)
            resolved.append(_LevelMasks(spec, reserved, page_reserved, address))
        return tuple(resolved)

    def _read_entry(self, address: int, size: int) -> int | None:
        try:
            return self.memory.read_int(address, size)
        except GuestMemoryError:
            return None  # not backed by RAM/ROM: treated as not present (module docstring)

    def read_pdptes(self, cr3: int) -> tuple[int | None, ...]:
        """The four PAE PDPTEs at CR3[31:5] (None where not backed by memory; §4.4.1)."""
        base = cr3 & SHAPE_PAE.root_mask
        return tuple(self._read_entry(base + 8 * i, 8) for i in range(4))

    def pdptes_valid(self, cr3: int, efer: int) -> bool:
        """False if a present PAE PDPTE has reserved bits set (MOV CR3 then #GPs, §4.4.1)."""
        level = self._masks[SHAPE_PAE.name, bool(efer & EFER_NXE)][0]
        for entry in self.read_pdptes(cr3):
            if entry is not None and entry & PTE_P and entry & level.table_reserved:
                return False
        return True

    @staticmethod
    def _fault(linear: int, code: int, access: int, user: bool, cr4: int, efer: int,
               stats: Stats) -> CpuFault:
        """Build the #PF with its error code (SDM Vol. 3A §4.7, Figure 4-12)."""
        code |= access & PF_WRITE
        if user:
            code |= PF_USER
        # I/D is reported for fetches only with SMEP, or with PAE/4-level paging and NXE.
        if access & PF_FETCH and (cr4 & CR4_SMEP or (cr4 & CR4_PAE and efer & EFER_NXE)):
            code |= PF_FETCH
        stats.count("paging", "page fault")
        return CpuFault(PF, code, linear)

    def walk(self, linear: int, access: int, user: bool, cr0: int, cr3: int, cr4: int,
             efer: int, pdptes: tuple[int | None, ...] | None = None) -> WalkResult:
        """Translate `linear` for `access` (0 read, PF_WRITE, PF_FETCH) or raise #PF.

        `user` means a user-mode access (CPL 3); PF_USER in `access` means the
        same.  Sets A in every entry used and D in the mapping entry on writes,
        only if the translation succeeds (§4.8).  `pdptes` are PAE PDPTEs
        cached at CR3 load; without them they are read from memory now.
        """
        stats = self.stats
        stats.count("tlb", "walk")
        user = bool(user or access & PF_USER)
        access &= PF_WRITE | PF_FETCH
        shape = paging_shape(cr4, efer)
        nxe = bool(efer & EFER_NXE) and shape.wide_entries
        levels = self._masks[shape.name, nxe]
        size = shape.entry_size
        linear_in = linear & ((1 << shape.linear_bits) - 1)
        table = cr3 & (self._root_4level if shape is SHAPE_4LEVEL else shape.root_mask)
        writable = user_page = True
        xd = False
        used: list[int] = []  # entry addresses whose A bit must be set
        entry = 0
        entry_addr = 0
        page_shift = PAGE_SHIFT
        for depth, level in enumerate(levels):
            spec = level.spec
            index = (linear_in >> spec.shift) & spec.index_mask
            entry_addr = table + index * size
            if pdptes is not None and depth == 0 and shape is SHAPE_PAE:
                entry = pdptes[index]
            else:
                entry = self._read_entry(entry_addr, size)
            if entry is None or not entry & PTE_P:
                raise self._fault(linear, 0, access, user, cr4, efer, stats)
            maps_page = spec.is_last or (spec.may_map_page and entry & PTE_PS)
            if entry & (level.page_reserved if maps_page else level.table_reserved):
                raise self._fault(linear, PF_PRESENT | PF_RESERVED, access, user, cr4, efer,
                                  stats)
            if spec.has_rights:
                writable = writable and bool(entry & PTE_RW)
                user_page = user_page and bool(entry & PTE_US)
                xd = xd or (nxe and bool(entry & PTE_XD))
            if spec.has_accessed and not entry & PTE_A:
                used.append(entry_addr)
            if maps_page:
                page_shift = spec.shift
                break
            table = entry & level.address_mask
        page_size = 1 << page_shift
        if shape.pse36 and page_shift == 22:
            base = (entry & 0xFFC00000) | (((entry >> 13) & 0xFF) << 32)
        else:
            base = entry & level.address_mask & ~(page_size - 1)

        if access_denied(writable, user_page, not xd, access, user,
                         bool(cr0 & CR0_WP), bool(cr4 & CR4_SMEP)):
            raise self._fault(linear, PF_PRESENT, access, user, cr4, efer, stats)

        # Success: set A bits (all levels), D in the mapping entry on a write (§4.8).
        # Only the low byte changes, so one byte is written per entry.
        memory = self.memory
        for address in used:
            low = self._read_entry(address, 1)
            if low is not None:
                memory.write_u8(address, low | PTE_A)
        dirty = bool(entry & PTE_D)
        if access & PF_WRITE and not dirty:
            low = self._read_entry(entry_addr, 1)
            if low is not None:
                memory.write_u8(entry_addr, low | PTE_A | PTE_D)
            dirty = True
        return WalkResult(
            phys_page_base=base, page_size=page_size, writable=writable, user=user_page,
            executable=not xd, global_=bool(entry & PTE_G and cr4 & CR4_PGE), dirty=dirty)


# The large-page sizes a TLB entry may come from, as address shifts (4 MiB, 2 MiB, 1 GiB).
_LARGE_SHIFTS = (21, 22, 30)


class Tlb:
    """A software TLB in front of `PageWalker` (SDM Vol. 3A §4.10).

    The fast path is public so the core can inline it: `read_pages[user]`,
    `write_pages[user]`, `fetch_pages[user]` (user = 0 or 1) map a virtual
    page number (linear >> 12) to a 4 KiB physical frame base.  A write entry
    exists only once the walk has set the page's dirty bit, so writes through
    the TLB never need to update page tables.  Large pages are entered per
    4 KiB page on demand; a reverse index lets INVLPG drop all of them.  The
    dicts are only ever cleared in place, never replaced, so references the
    core keeps stay valid.

    Hits are not counted (that would cost on every access); the core can
    derive them.  Misses, walks, flushes, INVLPGs and page faults are counted.
    """

    def __init__(self, memory: GuestMemory, stats: Stats,
                 phys_bits: int = DEFAULT_PHYS_BITS) -> None:
        self.walker = PageWalker(memory, stats, phys_bits)
        self.stats = stats
        self.phys_mask = (1 << phys_bits) - 1
        self.read_pages: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self.write_pages: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self.fetch_pages: tuple[dict[int, int], dict[int, int]] = ({}, {})
        # access kind (0, PF_WRITE, PF_FETCH) -> the pair of dicts above
        # (with PF_USER set in the access, both slots hold the user dict).
        self.pages: dict[int, tuple[dict[int, int], dict[int, int]]] = {
            0: self.read_pages, PF_WRITE: self.write_pages, PF_FETCH: self.fetch_pages}
        for kind, pair in list(self.pages.items()):
            self.pages[kind | PF_USER] = (pair[1], pair[1])
        self._all = self.read_pages + self.write_pages + self.fetch_pages
        self._global_vpns: set[int] = set()
        self._large: dict[tuple[int, int], set[int]] = {}  # (shift, linear >> shift) -> vpns
        self.cr0 = self.cr3 = self.cr4 = self.efer = 0
        self.paging = False
        self._mode: tuple[int, int, int] = (0, 0, 0)
        self._pdptes: tuple[int | None, ...] | None = None

    # -- control -----------------------------------------------------------
    def set_paging(self, cr0: int, cr3: int, cr4: int, efer: int,
                   cr3_write: bool | None = None) -> None:
        """Take new CR0/CR3/CR4/EFER values and flush as hardware does (§4.10.4.1).

        A change of CR0.PG/WP, CR4.PGE/PAE/PSE/SMEP or EFER.NXE/LMA flushes
        everything.  Otherwise a MOV to CR3 flushes all non-global entries
        (everything when CR4.PGE=0).  `cr3_write` says whether this call is a
        MOV to CR3; when None it is inferred: a changed CR3 value, or a call
        that changes nothing at all (a reload of the same CR3), count as one.
        PAE PDPTEs are (re)loaded here whenever hardware would load them.
        """
        mode = (cr0 & (CR0_PG | CR0_WP), cr4 & (CR4_PGE | CR4_PAE | CR4_PSE | CR4_SMEP),
                efer & (EFER_NXE | EFER_LMA))
        mode_changed = mode != self._mode
        if cr3_write is None:
            cr3_write = cr3 != self.cr3 or (
                not mode_changed and cr0 == self.cr0 and cr4 == self.cr4 and efer == self.efer)
        was_paging = self.paging
        self.cr0, self.cr3, self.cr4, self.efer = cr0, cr3, cr4, efer
        self._mode = mode
        self.paging = bool(cr0 & CR0_PG)
        if mode_changed:
            if was_paging or self.paging:
                self.flush(include_global=True)
        elif cr3_write and self.paging:
            self.flush(include_global=not cr4 & CR4_PGE)
        if self.paging and cr4 & CR4_PAE and not efer & EFER_LMA:
            if mode_changed or cr3_write or self._pdptes is None:
                self._pdptes = self.walker.read_pdptes(cr3)
        else:
            self._pdptes = None

    def pdptes_valid(self, cr0: int, cr3: int, cr4: int, efer: int) -> bool:
        """False when loading these values would #GP for a bad PAE PDPTE (§4.4.1).

        Call before committing a MOV to CR3 (or to CR0/CR4 enabling PAE paging).
        """
        if not (cr0 & CR0_PG and cr4 & CR4_PAE) or efer & EFER_LMA:
            return True
        return self.walker.pdptes_valid(cr3, efer)

    def flush(self, include_global: bool = True) -> None:
        """Invalidate TLB entries: all, or all but global ones."""
        self.stats.count("tlb", "flush")
        keep = self._global_vpns
        if include_global or not keep:
            for pages in self._all:
                pages.clear()
            self._global_vpns.clear()
            self._large.clear()
            return
        for pages in self._all:
            kept = {vpn: frame for vpn, frame in pages.items() if vpn in keep}
            pages.clear()
            pages.update(kept)
        for key, vpns in list(self._large.items()):
            vpns &= keep
            if not vpns:
                del self._large[key]

    def invlpg(self, linear: int) -> None:
        """Invalidate the page holding `linear`, global or not, whatever its size (§4.10.4.1)."""
        self.stats.count("tlb", "invlpg")
        self._drop(linear >> PAGE_SHIFT)
        for shift in _LARGE_SHIFTS:
            group = self._large.pop((shift, linear >> shift), None)
            if group:
                for vpn in group:
                    self._drop(vpn)

    def _drop(self, vpn: int) -> None:
        for pages in self._all:
            pages.pop(vpn, None)
        self._global_vpns.discard(vpn)

    # -- translation ---------------------------------------------------------
    def translate(self, linear: int, access: int, user: bool | int) -> int:
        """Physical address of `linear` for `access` (0, PF_WRITE or PF_FETCH) or #PF.

        `user` (0/1 or bool) is a CPL-3 access (PF_USER in `access` also means
        that).  Identity (masked to MAXPHYADDR) when CR0.PG=0.
        """
        if not self.paging:
            return linear & self.phys_mask
        frame = self.pages[access][user].get(linear >> PAGE_SHIFT)
        if frame is not None:
            return frame | (linear & PAGE_MASK)
        return self.miss(linear, access, user)

    def miss(self, linear: int, access: int, user: bool | int) -> int:
        """The slow path: walk, fill the TLB, return the physical address."""
        self.stats.count("tlb", "miss")
        user_bit = 1 if user or access & PF_USER else 0
        access &= PF_WRITE | PF_FETCH
        cr0, cr4 = self.cr0, self.cr4
        result = self.walker.walk(linear, access, bool(user_bit), cr0, self.cr3, cr4,
                                  self.efer, self._pdptes)
        vpn = linear >> PAGE_SHIFT
        frame = result.frame(linear)
        wp = bool(cr0 & CR0_WP)
        smep = bool(cr4 & CR4_SMEP)
        rights = (result.writable, result.user, result.executable)
        # The walk checked `access`; enter every kind of access these rights allow.
        if not access_denied(*rights, 0, bool(user_bit), wp, smep):
            self.read_pages[user_bit][vpn] = frame
        if result.dirty and not access_denied(*rights, PF_WRITE, bool(user_bit), wp, smep):
            self.write_pages[user_bit][vpn] = frame
        if not access_denied(*rights, PF_FETCH, bool(user_bit), wp, smep):
            self.fetch_pages[user_bit][vpn] = frame
        if result.global_:
            self._global_vpns.add(vpn)
        if result.page_size > 4096:
            shift = result.page_size.bit_length() - 1
            self._large.setdefault((shift, linear >> shift), set()).add(vpn)
        return frame | (linear & PAGE_MASK)

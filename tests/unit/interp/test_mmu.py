"""The interpreter's page walker and software TLB, against SDM Vol. 3A chapter 4.

Page tables are built by hand in a real GuestMemory for each paging mode
(32-bit §4.3, PAE §4.4, 4-level §4.5); translations, accessed/dirty bits
(§4.8), page-fault error codes and CR2 (§4.7) and TLB invalidation rules
(§4.10.4) are checked, plus a property test against an independent reference
walk written below.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pyvmm.cpu.state import (
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    CR4_PGE,
    CR4_PSE,
    CR4_SMEP,
    EFER_LMA,
    EFER_LME,
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
from pyvmm.engines.interp.mmu import PageWalker, Tlb
from pyvmm.machine.memory import GuestMemory
from pyvmm.stats import Stats

P, RW, US, A, D, PS, G = 1, 2, 4, 0x20, 0x40, 0x80, 0x100
XD = 1 << 63
PG_ON = CR0_PE | CR0_PG
LONG = EFER_LME | EFER_LMA


@pytest.fixture
def mem() -> GuestMemory:
    memory = GuestMemory()
    memory.add_region("ram", 0, 16 << 20)
    yield memory
    memory.close()


def make_tlb(mem: GuestMemory, cr0: int, cr3: int, cr4: int = 0, efer: int = 0):
    stats = Stats()
    tlb = Tlb(mem, stats)
    tlb.set_paging(cr0, cr3, cr4, efer)
    return tlb, stats


def page_fault(call) -> CpuFault:
    with pytest.raises(CpuFault) as info:
        call()
    assert info.value.vector == PF
    return info.value


# -- 32-bit paging (§4.3) ----------------------------------------------------

PD32 = 0x10000
PT32 = 0x11000


def build_32(mem: GuestMemory, pte_flags: int = P | RW | US, pde_flags: int = P | RW | US):
    """Linear 0x00403000 -> physical 0x00777000 through PD[1] -> PT[3]."""
    mem.write_u32(PD32 + 1 * 4, PT32 | pde_flags)
    mem.write_u32(PT32 + 3 * 4, 0x777000 | pte_flags)


def test_32bit_4k_translation_sets_accessed_then_dirty(mem):
    build_32(mem)
    tlb, stats = make_tlb(mem, PG_ON, PD32)
    assert tlb.translate(0x00403ABC, 0, False) == 0x777ABC
    assert mem.read_u32(PD32 + 4) & (A | D) == A  # D exists only in the mapping entry
    assert mem.read_u32(PT32 + 12) & (A | D) == A  # read: accessed, not dirty
    assert tlb.translate(0x00403004, PF_WRITE, False) == 0x777004
    assert mem.read_u32(PT32 + 12) & (A | D) == A | D
    assert mem.read_u32(PD32 + 4) & D == 0
    assert stats.get("tlb", "walk") == 2


def test_32bit_pse_4mib_page_and_pse36_high_bits(mem):
    # PD[2] maps 0x00800000-0x00BFFFFF as one 4 MiB page at 0x1_0040_0000 (bits 20:13 = 0x01).
    mem.write_u32(PD32 + 2 * 4, 0x00400000 | (0x01 << 13) | PS | P | RW)
    tlb, _ = make_tlb(mem, PG_ON, PD32, CR4_PSE)
    assert tlb.translate(0x00923456, 0, False) == 0x1_0052_3456
    assert mem.read_u32(PD32 + 8) & A


def test_32bit_pse36_bits_above_maxphyaddr_are_reserved(mem):
    # With MAXPHYADDR 36, PDE bits 20:17 (physical bits 39:36) are reserved (Table 4-5).
    mem.write_u32(PD32 + 2 * 4, 0x00400000 | (0x10 << 13) | PS | P)
    tlb = Tlb(mem, Stats(), phys_bits=36)
    tlb.set_paging(PG_ON, PD32, CR4_PSE, 0)
    fault = page_fault(lambda: tlb.translate(0x00800000, 0, False))
    assert fault.error_code == PF_PRESENT | PF_RESERVED
    tlb = Tlb(mem, Stats(), phys_bits=40)
    tlb.set_paging(PG_ON, PD32, CR4_PSE, 0)
    assert tlb.translate(0x00800000, 0, False) == 0x10_0040_0000


def test_32bit_ps_bit_ignored_without_cr4_pse(mem):
    # CR4.PSE=0: the PS bit is ignored and the PDE references a page table (§4.3).
    mem.write_u32(PD32 + 1 * 4, PT32 | PS | P | RW)
    mem.write_u32(PT32 + 3 * 4, 0x555000 | P | RW)
    tlb, _ = make_tlb(mem, PG_ON, PD32)
    assert tlb.translate(0x00403010, 0, False) == 0x555010


def test_32bit_pse_reserved_bit21(mem):
    mem.write_u32(PD32 + 2 * 4, 0x00400000 | (1 << 21) | PS | P)
    tlb, _ = make_tlb(mem, PG_ON, PD32, CR4_PSE)
    fault = page_fault(lambda: tlb.translate(0x00800000, 0, False))
    assert fault.error_code == PF_PRESENT | PF_RESERVED


def test_32bit_fetch_fault_has_no_id_bit_without_nx_or_smep(mem):
    build_32(mem, pte_flags=RW | US)  # not present
    tlb, _ = make_tlb(mem, PG_ON, PD32)
    fault = page_fault(lambda: tlb.translate(0x00403000, PF_FETCH, True))
    assert fault.error_code == PF_USER  # I/D is 0 with 32-bit paging and no SMEP (§4.7)


# -- PAE paging (§4.4) -------------------------------------------------------

PDPT = 0x20020  # 32-byte aligned, not page aligned
PAE_PD = 0x21000
PAE_PT = 0x22000


def build_pae(mem: GuestMemory):
    """0x40201000 -> 0x345000 (4 KiB); 0x40400000.. -> 0x600000 (2 MiB)."""
    mem.write_u64(PDPT + 1 * 8, PAE_PD | P)
    mem.write_u64(PAE_PD + 1 * 8, PAE_PT | P | RW | US)
    mem.write_u64(PAE_PT + 1 * 8, 0x345000 | P | RW | US)
    mem.write_u64(PAE_PD + 2 * 8, 0x600000 | PS | P | RW | US)


def test_pae_4k_and_2mib_pages(mem):
    build_pae(mem)
    tlb, _ = make_tlb(mem, PG_ON, PDPT, CR4_PAE)
    assert tlb.translate(0x40201FFF, 0, True) == 0x345FFF
    assert tlb.translate(0x4055_4321, PF_WRITE, True) == 0x754321
    # PAE PDPTEs have no accessed bit (bit 5 is reserved there, Table 4-8).
    assert mem.read_u64(PDPT + 8) == PAE_PD | P
    assert mem.read_u64(PAE_PD + 8) & A
    assert mem.read_u64(PAE_PT + 8) & (A | D) == A
    assert mem.read_u64(PAE_PD + 16) & (A | D) == A | D


def test_pae_pdptes_are_loaded_at_cr3_load(mem):
    build_pae(mem)
    tlb, _ = make_tlb(mem, PG_ON, PDPT, CR4_PAE)
    mem.write_u64(PDPT + 1 * 8, 0)  # the cached PDPTE still points at the PD
    assert tlb.translate(0x40201000, 0, False) == 0x345000
    tlb.set_paging(PG_ON, PDPT, CR4_PAE, 0)  # MOV CR3 reloads the PDPTEs
    fault = page_fault(lambda: tlb.translate(0x40201000, 0, False))
    assert fault.error_code == 0 and fault.cr2 == 0x40201000


def test_pae_pdpte_reserved_bits_detected(mem):
    build_pae(mem)
    tlb, _ = make_tlb(mem, PG_ON, PDPT, CR4_PAE)
    assert tlb.pdptes_valid(PG_ON, PDPT, CR4_PAE, 0)
    mem.write_u64(PDPT + 1 * 8, PAE_PD | P | RW)  # R/W is reserved in a PAE PDPTE
    assert not tlb.pdptes_valid(PG_ON, PDPT, CR4_PAE, 0)
    walker = PageWalker(mem, Stats())
    fault = page_fault(lambda: walker.walk(0x40201000, 0, False, PG_ON, PDPT, CR4_PAE, 0))
    assert fault.error_code == PF_PRESENT | PF_RESERVED


def test_pae_xd_is_reserved_without_nxe(mem):
    build_pae(mem)
    mem.write_u64(PAE_PT + 1 * 8, 0x345000 | P | XD)
    tlb, _ = make_tlb(mem, PG_ON, PDPT, CR4_PAE)
    fault = page_fault(lambda: tlb.translate(0x40201000, 0, False))
    assert fault.error_code == PF_PRESENT | PF_RESERVED
    tlb.set_paging(PG_ON, PDPT, CR4_PAE, EFER_NXE)
    assert tlb.translate(0x40201000, 0, False) == 0x345000
    fault = page_fault(lambda: tlb.translate(0x40201000, PF_FETCH, False))
    assert fault.error_code == PF_PRESENT | PF_FETCH


# -- 4-level paging (§4.5) ---------------------------------------------------

PML4 = 0x30000
L_PDPT = 0x31000
L_PD = 0x32000
L_PT = 0x33000
HIGH = 0xFFFF_8000_0000_0000  # PML4 index 256


def build_4level(mem: GuestMemory, leaf: int = P | RW | US, upper: int = P | RW | US):
    """HIGH+0x00201000 -> 0x456000 (4 KiB), HIGH+0x400000 -> 0xA00000 (2 MiB),
    HIGH+0x40000000 -> 0x1_4000_0000 (1 GiB)."""
    mem.write_u64(PML4 + 256 * 8, L_PDPT | upper)
    mem.write_u64(L_PDPT + 0 * 8, L_PD | upper)
    mem.write_u64(L_PD + 1 * 8, L_PT | upper)
    mem.write_u64(L_PT + 1 * 8, 0x456000 | leaf)
    mem.write_u64(L_PD + 2 * 8, 0xA00000 | PS | leaf)
    mem.write_u64(L_PDPT + 1 * 8, 0x1_4000_0000 | PS | leaf)


def long_tlb(mem, cr0=PG_ON, cr4=CR4_PAE, efer=LONG):
    return make_tlb(mem, cr0, PML4, cr4, efer)


def test_4level_page_sizes(mem):
    build_4level(mem)
    tlb, stats = long_tlb(mem)
    assert tlb.translate(HIGH + 0x00201ABC, 0, False) == 0x456ABC
    assert tlb.translate(HIGH + 0x005F_FFFF, 0, False) == 0xBF_FFFF
    assert tlb.translate(HIGH + 0x7654_3210, PF_WRITE, False) == 0x1_7654_3210
    assert stats.get("tlb", "walk") == 3
    for entry in (PML4 + 256 * 8, L_PDPT, L_PD + 8, L_PT + 8, L_PD + 16):
        assert mem.read_u64(entry) & (A | D) == A
    assert mem.read_u64(L_PDPT + 8) & (A | D) == A | D  # the written 1 GiB page


def test_not_present_error_codes_and_cr2(mem):
    build_4level(mem)
    tlb, stats = long_tlb(mem)
    address = HIGH + 0x00202000  # PT[2] is empty
    fault = page_fault(lambda: tlb.translate(address, 0, False))
    assert (fault.error_code, fault.cr2) == (0, address)
    fault = page_fault(lambda: tlb.translate(address + 8, PF_WRITE, True))
    assert (fault.error_code, fault.cr2) == (PF_WRITE | PF_USER, address + 8)
    fault = page_fault(lambda: tlb.translate(0x1000, 0, True))  # PML4[0] empty
    assert fault.error_code == PF_USER
    assert stats.get("paging", "page fault") == 3


def test_read_only_writes_and_cr0_wp(mem):
    build_4level(mem, leaf=P | US)
    tlb, _ = long_tlb(mem)  # WP=0: supervisor may write read-only pages
    assert tlb.translate(HIGH + 0x201010, PF_WRITE, False) == 0x456010
    fault = page_fault(lambda: tlb.translate(HIGH + 0x201010, PF_WRITE, True))
    assert fault.error_code == PF_PRESENT | PF_WRITE | PF_USER
    tlb.set_paging(PG_ON | CR0_WP, PML4, CR4_PAE, LONG)
    fault = page_fault(lambda: tlb.translate(HIGH + 0x201010, PF_WRITE, False))
    assert fault.error_code == PF_PRESENT | PF_WRITE
    assert tlb.translate(HIGH + 0x201010, 0, True) == 0x456010


def test_read_only_in_upper_level_applies(mem):
    build_4level(mem, leaf=P | RW | US, upper=P | US)  # R/W=0 in the PML4E etc.
    tlb, _ = long_tlb(mem, cr0=PG_ON | CR0_WP)
    fault = page_fault(lambda: tlb.translate(HIGH + 0x201000, PF_WRITE, False))
    assert fault.error_code == PF_PRESENT | PF_WRITE


def test_user_access_to_supervisor_page(mem):
    build_4level(mem, leaf=P | RW)
    tlb, _ = long_tlb(mem)
    assert tlb.translate(HIGH + 0x201000, 0, False) == 0x456000
    fault = page_fault(lambda: tlb.translate(HIGH + 0x201000, 0, True))
    assert fault.error_code == PF_PRESENT | PF_USER
    assert mem.read_u64(L_PT + 8) & A  # set by the earlier supervisor read


def test_fault_leaves_accessed_bits_clear(mem):
    build_4level(mem, leaf=P | RW)
    tlb, _ = long_tlb(mem)
    page_fault(lambda: tlb.translate(HIGH + 0x201000, 0, True))
    assert mem.read_u64(PML4 + 256 * 8) & A == 0
    assert mem.read_u64(L_PT + 8) & A == 0


def test_nx_fetch_and_smep(mem):
    build_4level(mem, leaf=P | RW | US | XD)
    tlb, _ = long_tlb(mem, efer=LONG | EFER_NXE)
    assert tlb.translate(HIGH + 0x201000, 0, True) == 0x456000
    fault = page_fault(lambda: tlb.translate(HIGH + 0x201000, PF_FETCH, True))
    assert fault.error_code == PF_PRESENT | PF_USER | PF_FETCH
    # XD in a non-leaf entry applies to everything below it.
    build_4level(mem, leaf=P | RW | US, upper=P | RW | US | XD)
    tlb.flush()
    fault = page_fault(lambda: tlb.translate(HIGH + 0x400000, PF_FETCH, False))
    assert fault.error_code == PF_PRESENT | PF_FETCH
    # SMEP: supervisor fetch from a user page faults; I/D is set even without NXE.
    build_4level(mem)
    tlb.set_paging(PG_ON, PML4, CR4_PAE | CR4_SMEP, LONG)
    fault = page_fault(lambda: tlb.translate(HIGH + 0x201000, PF_FETCH, False))
    assert fault.error_code == PF_PRESENT | PF_FETCH
    assert tlb.translate(HIGH + 0x201000, PF_FETCH, True) == 0x456000


@pytest.mark.parametrize("entry, value", [
    (L_PT + 8, 0x456000 | P | (1 << 45)),  # physical bit >= MAXPHYADDR (36)
    (L_PD + 16, 0xA00000 | PS | P | (1 << 13)),  # 2 MiB page, bits 20:13 reserved
    (L_PDPT + 8, 0x1_4000_0000 | PS | P | (1 << 20)),  # 1 GiB page, bits 29:13 reserved
    (PML4 + 256 * 8, L_PDPT | PS | P),  # PS is reserved in a PML4E
    (L_PT + 8, 0x456000 | P | XD),  # XD reserved without EFER.NXE
])
def test_reserved_bits(mem, entry, value):
    build_4level(mem)
    mem.write_u64(entry, value)
    tlb, _ = long_tlb(mem)
    address = {L_PT + 8: HIGH + 0x201000, L_PD + 16: HIGH + 0x400000,
               L_PDPT + 8: HIGH + 0x40000000, PML4 + 256 * 8: HIGH + 0x201000}[entry]
    fault = page_fault(lambda: tlb.translate(address, PF_WRITE, True))
    assert fault.error_code == PF_PRESENT | PF_RESERVED | PF_WRITE | PF_USER
    assert fault.cr2 == address


def test_table_outside_ram_is_not_present(mem):
    mem.write_u64(PML4, 0x4000_0000 | P | RW)  # 1 GiB: no RAM there
    tlb, _ = long_tlb(mem)
    fault = page_fault(lambda: tlb.translate(0x1000, 0, False))
    assert fault.error_code == 0


# -- TLB behaviour (§4.10) ---------------------------------------------------

def test_paging_off_is_identity(mem):
    tlb, stats = make_tlb(mem, CR0_PE, 0)
    assert tlb.translate(0x12345678, PF_WRITE, True) == 0x12345678
    assert stats.get("tlb", "walk") == 0


def test_hit_needs_no_second_walk(mem):
    build_4level(mem)
    tlb, stats = long_tlb(mem)
    tlb.translate(HIGH + 0x201000, 0, False)
    for offset in range(0, 4096, 512):
        assert tlb.translate(HIGH + 0x201000 + offset, 0, False) == 0x456000 + offset
    assert stats.get("tlb", "walk") == 1 and stats.get("tlb", "miss") == 1
    assert tlb.read_pages[0][(HIGH + 0x201000) >> 12] == 0x456000


def test_write_entry_only_after_dirty(mem):
    build_4level(mem)
    tlb, stats = long_tlb(mem)
    vpn = (HIGH + 0x201000) >> 12
    tlb.translate(HIGH + 0x201000, 0, False)
    assert vpn in tlb.read_pages[0] and vpn not in tlb.write_pages[0]
    tlb.translate(HIGH + 0x201000, PF_WRITE, False)
    assert mem.read_u64(L_PT + 8) & D
    assert tlb.write_pages[0][vpn] == 0x456000
    # A page whose D bit is already set gets a write entry from a read walk.
    mem.write_u64(L_PT + 2 * 8, 0x457000 | P | RW | A | D)
    tlb.translate(HIGH + 0x202000, 0, False)
    walks = stats.get("tlb", "walk")
    assert tlb.translate(HIGH + 0x202008, PF_WRITE, False) == 0x457008
    assert stats.get("tlb", "walk") == walks


def test_stale_entry_survives_until_invlpg(mem):
    build_4level(mem)
    tlb, _ = long_tlb(mem)
    assert tlb.translate(HIGH + 0x201000, 0, False) == 0x456000
    mem.write_u64(L_PT + 8, 0x999000 | P | RW)
    assert tlb.translate(HIGH + 0x201000, 0, False) == 0x456000  # stale, as on hardware
    tlb.invlpg(HIGH + 0x201234)
    assert tlb.translate(HIGH + 0x201000, 0, False) == 0x999000


def test_stale_entry_survives_until_cr3_reload(mem):
    build_4level(mem)
    tlb, stats = long_tlb(mem)
    tlb.translate(HIGH + 0x201000, 0, False)
    mem.write_u64(L_PT + 8, 0)
    assert tlb.translate(HIGH + 0x201000, 0, False) == 0x456000
    tlb.set_paging(PG_ON, PML4, CR4_PAE, LONG)  # MOV CR3 with the same value
    page_fault(lambda: tlb.translate(HIGH + 0x201000, 0, False))
    assert stats.get("tlb", "flush") >= 1


def test_global_pages_survive_cr3_reload_with_pge(mem):
    build_4level(mem, leaf=P | RW | G)
    mem.write_u64(L_PT + 2 * 8, 0x458000 | P | RW)  # non-global
    tlb, _ = long_tlb(mem, cr4=CR4_PAE | CR4_PGE)
    tlb.translate(HIGH + 0x201000, 0, False)
    tlb.translate(HIGH + 0x202000, 0, False)
    tlb.translate(HIGH + 0x400000, 0, False)
    mem.write_u64(L_PT + 8, 0)
    mem.write_u64(L_PT + 2 * 8, 0)
    mem.write_u64(L_PD + 2 * 8, 0)
    tlb.set_paging(PG_ON, PML4, CR4_PAE | CR4_PGE, LONG, cr3_write=True)
    assert tlb.translate(HIGH + 0x201000, 0, False) == 0x456000
    assert tlb.translate(HIGH + 0x400010, 0, False) == 0xA00010
    page_fault(lambda: tlb.translate(HIGH + 0x202000, 0, False))
    # A full flush (e.g. toggling CR4.PGE) drops global entries too.
    tlb.set_paging(PG_ON, PML4, CR4_PAE, LONG)
    page_fault(lambda: tlb.translate(HIGH + 0x201000, 0, False))


def test_global_bit_ignored_without_pge(mem):
    build_4level(mem, leaf=P | RW | G)
    tlb, _ = long_tlb(mem)
    tlb.translate(HIGH + 0x201000, 0, False)
    mem.write_u64(L_PT + 8, 0)
    tlb.set_paging(PG_ON, PML4, CR4_PAE, LONG, cr3_write=True)
    page_fault(lambda: tlb.translate(HIGH + 0x201000, 0, False))


def test_invlpg_drops_every_4k_piece_of_a_large_page(mem):
    build_4level(mem, leaf=P | RW | G)
    tlb, stats = long_tlb(mem, cr4=CR4_PAE | CR4_PGE)
    for offset in (0, 0x1000, 0x1F0000):
        tlb.translate(HIGH + 0x400000 + offset, 0, False)
    mem.write_u64(L_PD + 2 * 8, 0xC00000 | PS | P | RW)
    tlb.invlpg(HIGH + 0x500000)  # an address inside the page not itself cached
    assert tlb.translate(HIGH + 0x400000, 0, False) == 0xC00000
    assert tlb.translate(HIGH + 0x5F0000, 0, False) == 0xDF0000
    assert stats.get("tlb", "invlpg") == 1


def test_mode_change_flushes_and_dicts_stay_the_same_objects(mem):
    build_4level(mem)
    tlb, _ = long_tlb(mem)
    reads = tlb.read_pages[0]
    tlb.translate(HIGH + 0x201000, 0, False)
    assert reads
    tlb.set_paging(PG_ON | CR0_WP, PML4, CR4_PAE, LONG)
    assert not reads and tlb.read_pages[0] is reads


def test_user_and_supervisor_entries_are_separate(mem):
    build_4level(mem, leaf=P | RW)
    tlb, _ = long_tlb(mem)
    tlb.translate(HIGH + 0x201000, 0, False)
    fault = page_fault(lambda: tlb.translate(HIGH + 0x201000, 0, True))
    assert fault.error_code == PF_PRESENT | PF_USER


# -- property test against an independent reference walk -------------------

PROP_PML4 = 0x1000
PROP_TABLES = [0x2000 + 0x1000 * i for i in range(6)]  # PDPTs, PDs, PTs drawn from these
PHYS_BITS = 40


def reference_translate(mem, cr3, linear, access, user, wp, nxe, smep):
    """Straight from SDM Vol. 3A §4.5/§4.6/§4.7: ('ok', phys) or ('pf', error code)."""
    write = access == PF_WRITE
    fetch = access == PF_FETCH
    code = (2 if write else 0) | (4 if user else 0) | (16 if fetch and (nxe or smep) else 0)
    above_maxphy = ((1 << 52) - 1) ^ ((1 << PHYS_BITS) - 1)
    address_bits = ((1 << PHYS_BITS) - 1) ^ 0xFFF
    table = cr3 & address_bits
    all_rw, all_us, any_xd = True, True, False
    for shift in (39, 30, 21, 12):
        entry_address = table + ((linear >> shift) & 0x1FF) * 8
        if not mem.is_mapped(entry_address, 8):  # pyvmm's documented choice: not present
            return ("pf", code)
        entry = mem.read_u64(entry_address)
        if entry & 1 == 0:
            return ("pf", code)
        reserved = above_maxphy | (0 if nxe else 1 << 63)
        large = shift in (30, 21) and entry & 0x80
        if shift == 39:
            reserved |= 0x80
        if large:
            reserved |= ((1 << shift) - 1) ^ 0x1FFF  # bits shift-1 .. 13
        if entry & reserved:
            return ("pf", code | 1 | 8)
        all_rw = all_rw and entry & 2 != 0
        all_us = all_us and entry & 4 != 0
        any_xd = any_xd or (nxe and entry >> 63 == 1)
        if large or shift == 12:
            base = entry & address_bits & ~((1 << shift) - 1)
            phys = base + (linear & ((1 << shift) - 1))
            break
        table = entry & address_bits
    denied = False
    if user and not all_us:
        denied = True
    if write and not all_rw and (user or wp):
        denied = True
    if fetch and (any_xd or (not user and smep and all_us)):
        denied = True
    return ("pf", code | 1) if denied else ("ok", phys)


# Weighted towards well-formed entries so that most walks reach a page.
flag_bits = st.sampled_from([P | RW | US] * 6 + [P | RW, P | US, P, 0, P | RW | US | XD,
                             P | RW | US | A | D, P | RW | US | G, P | RW | US | (1 << 51)])


@st.composite
def page_tables(draw):
    entries = []
    for table in [PROP_PML4, *PROP_TABLES]:
        for index in (0, 1, 2, 511):
            kind = draw(st.sampled_from(["table", "table", "page", "empty"]))
            if kind == "table":
                value = draw(st.sampled_from(PROP_TABLES)) | draw(flag_bits)
            elif kind == "page":  # PS makes it a 1 GiB / 2 MiB page; in a PT it is PAT
                frame = draw(st.integers(0, (1 << 27) - 1)) << 12
                if draw(st.integers(0, 3)):  # mostly well-aligned large pages
                    frame &= ~0x3FFFF000
                value = frame | draw(flag_bits) | (PS if draw(st.integers(0, 4)) else 0)
            else:
                continue
            entries.append((table + index * 8, value))
    return entries


@st.composite
def linear_addresses(draw):
    indices = [draw(st.sampled_from([0, 1, 2, 511])) for _ in range(4)]
    linear = (indices[0] << 39) | (indices[1] << 30) | (indices[2] << 21) | (indices[3] << 12)
    linear |= draw(st.integers(0, 0xFFF))
    if linear >> 47:
        linear |= 0xFFFF << 48  # canonical
    return linear


_PROP_MEMORY = GuestMemory()
_PROP_MEMORY.add_region("ram", 0, 1 << 20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables=page_tables(), addresses=st.lists(linear_addresses(), min_size=1, max_size=6),
       access=st.sampled_from([0, PF_WRITE, PF_FETCH]), user=st.booleans(),
       wp=st.booleans(), nxe=st.booleans(), smep=st.booleans())
def test_translate_matches_reference(tables, addresses, access, user, wp, nxe, smep):
    mem = _PROP_MEMORY
    mem.write(0, bytes(0x10000))
    for address, value in tables:
        mem.write_u64(address, value)
    cr0 = PG_ON | (CR0_WP if wp else 0)
    cr4 = CR4_PAE | (CR4_SMEP if smep else 0)
    efer = LONG | (EFER_NXE if nxe else 0)
    tlb = Tlb(mem, Stats(), phys_bits=PHYS_BITS)
    tlb.set_paging(cr0, PROP_PML4, cr4, efer)
    for linear in addresses * 2:  # second round exercises TLB hits
        # A/D bits written by earlier walks are part of the tables the reference reads.
        expected = reference_translate(mem, PROP_PML4, linear, access, user, wp, nxe, smep)
        try:
            got = ("ok", tlb.translate(linear, access, user))
        except CpuFault as fault:
            assert fault.vector == PF and fault.cr2 == linear
            got = ("pf", fault.error_code)
        event(got[0] if got[0] == "ok" else f"#PF {got[1]:#x}")
        assert got == expected


def test_pf_user_in_access_means_a_user_access(mem):
    # The core may pass PF_USER inside `access`; the fast path must then use the user dicts.
    build_4level(mem, leaf=P | RW)  # supervisor-only page
    tlb, _ = long_tlb(mem)
    assert tlb.translate(HIGH + 0x201000, 0, False) == 0x456000
    fault = page_fault(lambda: tlb.translate(HIGH + 0x201000, PF_USER, True))
    assert fault.error_code == PF_PRESENT | PF_USER
    fault = page_fault(lambda: tlb.translate(HIGH + 0x201000, PF_USER | PF_WRITE, False))
    assert fault.error_code == PF_PRESENT | PF_USER | PF_WRITE

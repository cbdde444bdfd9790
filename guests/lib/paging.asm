; 4-level page tables (SDM 3A §4.5) for the kernel guests.
;
; Layout: the first 2 MiB identity-mapped with 4 KiB pages, supervisor-only
; except [__user_start, __user_end) which is user-accessible; page 0 left
; not present to catch null pointers.  PDPT entry 1 (1 GiB) points to a page
; table with no present entries: the demand-paging window.  Upper-level
; entries all allow U/W, so the leaf entry alone decides (SDM 3A §4.6).

%include "x86.inc"
%include "paging.inc"

        extern __user_start, __user_end
        global pml4, paging_enable32, paging_map_window_page

PTE_TABLE       equ PTE_P | PTE_W | PTE_U  ; a non-leaf entry that restricts nothing

        section .bss nobits alloc write align=4096
pml4:           resb PAGE_SIZE
pdpt:           resb PAGE_SIZE
pd_low:         resb PAGE_SIZE
pt_low:         resb PAGE_SIZE
pd_window:      resb PAGE_SIZE
pt_window:      resb PAGE_SIZE

        section .text
        bits 32
; paging_enable32: build the tables and enter IA-32e mode (32-bit code,
; tables already zero).  Returns in compatibility mode.
paging_enable32:
        mov dword [pml4], pdpt + PTE_TABLE
        mov dword [pdpt], pd_low + PTE_TABLE
        mov dword [pdpt + 8 * WINDOW_PDPT_INDEX], pd_window + PTE_TABLE
        mov dword [pd_low], pt_low + PTE_TABLE
        mov dword [pd_window], pt_window + PTE_TABLE
        mov ecx, 1                      ; page 0 stays not present
.fill:
        mov eax, ecx
        shl eax, PAGE_SHIFT
        mov edx, eax
        or edx, PTE_P | PTE_W
        cmp eax, __user_start
        jb .store
        cmp eax, __user_end
        jae .store
        or edx, PTE_U
.store:
        mov [pt_low + ecx * 8], edx
        inc ecx
        cmp ecx, PT_ENTRIES
        jb .fill

        mov eax, pml4
        mov cr3, eax
        mov eax, cr4
        or eax, CR4_PAE
        mov cr4, eax
        mov ecx, MSR_EFER
        rdmsr
        or eax, EFER_LME
        wrmsr
        mov eax, cr0
        or eax, CR0_PG | CR0_WP
        mov cr0, eax
        ret

        bits 64
        default rel
; paging_map_window_page(rdi = virtual address in the window, rsi = physical
; page): map it present, writable, user; flush the stale TLB entry.
paging_map_window_page:
        mov rax, rdi
        sub rax, WINDOW_BASE
        shr rax, PAGE_SHIFT
        mov rdx, rsi
        or rdx, PTE_P | PTE_W | PTE_U
        mov ecx, pt_window
        mov [rcx + rax * 8], rdx
        invlpg [rdi]
        ret

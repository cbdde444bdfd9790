; bench-mem: memory-bound, a pointer chase over more pages than a TLB holds.
;
; The kernel maps MEM_MAX_PAGES 4 KiB pages (32 MiB) user/writable at
; MEM_VIRT, backed by physical memory from MEM_PHYS (so the guest needs at
; least 40 MiB of RAM).  Ring 3 first links one node per page into a single
; cycle, then follows it n times.  Node i lives in page i at offset
; (i * 64) mod 4096, so nodes also spread over cache sets, and its successor
; is page (i * LCG_A + LCG_C) mod pages: with pages a power of two, LCG_A = 1
; (mod 4) and LCG_C odd this map is one full cycle (Hull-Dobell theorem), so
; the walk visits every page before repeating, in an order no prefetcher
; follows.  8192 pages is more than the second-level TLB of current x86
; cores holds (1.5-3 K entries), so almost every hop is a TLB miss: a page
; walk under hardware or shadow paging, a software-TLB miss in an emulator.
;
; Command line: `pages=P` (default and maximum MEM_MAX_PAGES, rounded down
; to a power of two) shrinks the working set, e.g. for quick tests.
;
; Measured part: from mem_user's first instruction to its `int 0x80`
; (SYS_EXIT) inclusive, ring 3: MEM_PROLOGUE + pages * MEM_INIT_K (linking)
; + MEM_MIDDLE + n * MEM_K (walking) + MEM_EPILOGUE instructions.

%include "bench.inc"
%include "x86.inc"
%include "idt.inc"

MEM_VIRT        equ 0x80000000  ; PML4[0] -> PDPT entry 2 (2 GiB)
MEM_PDPT_INDEX  equ MEM_VIRT >> 30
MEM_PHYS        equ 0x400000    ; backing memory: 4 MiB .. 36 MiB physical
MEM_MAX_PAGES   equ 8192        ; 32 MiB
MEM_PTS         equ MEM_MAX_PAGES / PT_ENTRIES
NODE_SPREAD     equ 64          ; node i sits at (i * 64) mod 4096 in its page
NODE_OFFSET_MASK equ PAGE_SIZE - NODE_SPREAD
LCG_A           equ 0x5851F42D  ; = 1 (mod 4)
LCG_C           equ 0x14057B7F  ; odd

MEM_PROLOGUE    equ 3           ; lea, mov, xor
MEM_INIT_K      equ 19          ; .link: 3 successor + 6 its address + 6 own address + store + inc, cmp, jb
MEM_MIDDLE      equ 5           ; after .link: mov, xor, mov, test, jz
MEM_K           equ 5           ; .walk: load, add, store, dec, jnz
MEM_EPILOGUE    equ 3           ; store, mov eax, int 0x80

PTE_USER_RW     equ PTE_P | PTE_W | PTE_U

        extern user_enter, uart_puts, uart_put_hex64, uart_put_dec, cmdline_get_uint
        global guest_name, bench_setup, bench_rep, bench_count, bench_extra
        global measure_start, measure_end   ; first and last instruction measured

        section .rodata
guest_name:     db "bench-mem", 0
key_pages:      db "pages=", 0
msg_checksum:   db " checksum=", 0
msg_pages:      db " pages=", 0

        section .bss nobits alloc write align=4096
mem_pd:         resb PAGE_SIZE
mem_pts:        resb MEM_PTS * PAGE_SIZE
mem_pages:      resq 1
checksum:       resq 1

        section .udata progbits alloc noexec write align=8
mem_result:     dq 0

        section .text
        bits 64
        default rel

; bench_setup: read `pages=`, map that many pages at MEM_VIRT.  The PDPT
; is found through CR3 -> PML4[0] (lib/paging.asm keeps it private).
bench_setup:
        lea rdi, [key_pages]
        mov esi, MEM_MAX_PAGES
        mov edx, MEM_MAX_PAGES
        call cmdline_get_uint
        test rax, rax
        jnz .nonzero
        mov eax, 1
.nonzero:
        bsr rcx, rax                    ; round down to a power of two
        mov eax, 1
        shl rax, cl
        mov [mem_pages], rax

        xor ecx, ecx                    ; PTEs: page i -> MEM_PHYS + i * 4 KiB
        lea rdx, [mem_pts]
.pte:
        mov rsi, rcx
        shl rsi, PAGE_SHIFT
        add rsi, MEM_PHYS | PTE_USER_RW
        mov [rdx + rcx * 8], rsi
        inc rcx
        cmp rcx, rax
        jb .pte

        xor ecx, ecx                    ; PDEs: one page table per 2 MiB
        lea rdx, [mem_pd]
        lea rsi, [mem_pts]
.pde:
        mov rdi, rcx
        shl rdi, PAGE_SHIFT
        lea rdi, [rsi + rdi + PTE_USER_RW]
        mov [rdx + rcx * 8], rdi
        inc rcx
        cmp rcx, MEM_PTS
        jb .pde

        mov rax, cr3
        mov rcx, [rax]                  ; PML4[0] -> the PDPT (identity-mapped)
        and rcx, ~(PAGE_SIZE - 1)
        lea rdx, [mem_pd + PTE_USER_RW]
        mov [rcx + MEM_PDPT_INDEX * 8], rdx
        mov cr3, rax                    ; flush the TLB
        ret

bench_rep:
        mov rsi, [mem_pages]
        mov rdx, rsi
        mov rsi, rdi
        lea rdi, [mem_user]
        mov ecx, 1 << 1                 ; IF = 0
        call user_enter
        mov rax, [mem_result]
        rol qword [checksum], 7
        xor [checksum], rax
        ret

bench_count:
        imul rax, rdi, MEM_K
        mov rcx, [mem_pages]
        imul rcx, rcx, MEM_INIT_K
        add rax, rcx
        add rax, MEM_PROLOGUE + MEM_MIDDLE + MEM_EPILOGUE
        ret

bench_extra:
        lea rdi, [msg_checksum]
        call uart_puts
        mov rdi, [checksum]
        call uart_put_hex64
        lea rdi, [msg_pages]
        call uart_puts
        mov rdi, [mem_pages]
        jmp uart_put_dec

; NODE_ADDR dst, index, tmp: dst = MEM_VIRT (in r9) + index * 4096 +
; (index * 64) mod 4096.  Six instructions; index is kept.
%macro NODE_ADDR 3
        mov %3, %2
        shl %3, PAGE_SHIFT
        lea %1, [%3 + r9]
        shr %3, PAGE_SHIFT - 6          ; index * 64
        and %3, NODE_OFFSET_MASK
        add %1, %3
%endmacro

        section .utext progbits alloc exec nowrite align=16
; mem_user(rdi = n, rsi = pages, a power of two), ring 3.
measure_start:                          ; (same address: the measured part's first instruction)
mem_user:
        lea r8, [rsi - 1]               ; prologue 1: index mask
        mov r9d, MEM_VIRT               ; 2
        xor ecx, ecx                    ; 3: i = 0
.link:
        imul rax, rcx, LCG_A            ; 1: successor j = (i * A + C) mod pages
        add rax, LCG_C                  ; 2
        and rax, r8                     ; 3
        NODE_ADDR r10, rax, rdx         ; 4-9: its address
        NODE_ADDR r11, rcx, rdx         ; 10-15: node i's address
        mov [r11], r10                  ; 16
        inc rcx                         ; 17
        cmp rcx, rsi                    ; 18
        jb .link                        ; 19
        mov rax, r9                     ; middle 1: start at node 0
        xor ebx, ebx                    ; 2: checksum
        mov rcx, rdi                    ; 3
        test rcx, rcx                   ; 4
        jz .done                        ; 5
.walk:
        mov rax, [rax]                  ; 1: next node
        add rbx, rax                    ; 2
        mov [rax + 8], rbx              ; 3: and a store into the node just reached
        dec rcx                         ; 4
        jnz .walk                       ; 5
.done:
        mov [mem_result], rbx           ; epilogue 1
        mov eax, SYS_EXIT               ; 2
measure_end:
        int SYSCALL_VECTOR              ; 3: ends the measured part

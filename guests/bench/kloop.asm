; bench-kloop: a 32-bit protected-mode kernel loop, ring 0, 2-level paging.
;
; Unlike the other benchmark kernels this one never enters long mode and
; links none of lib/*.asm (only the mode-neutral lib/*.inc macros): the
; multiboot loader enters _start in 32-bit protected mode with flat segments
; (Multiboot Spec 0.6.96 §3.2); we load our own flat GDT, build one page
; directory whose entry 0 points at one page table mapping 0..4 MiB with
; 4 KiB pages (SDM 3A §4.3, "32-Bit Paging": CR4.PSE = CR4.PAE = 0, CR3 ->
; the page directory, then CR0.PG), and run the measured loop at CPL 0 with
; interrupts off (IF = 0), so nothing can add instructions to it.
;
; The loop mixes what kernel code does: mov, shl/shr, xor (a xorshift32
; step), a table load indexed by the data, imul, a store back into the
; table, a test and a data-dependent branch.  Both arms of the branch are
; three instructions long and each ends in its own back edge, so every
; iteration executes exactly KLOOP_K instructions whatever the data.
;
; Measured part: kloop from its first instruction to its `ret` inclusive:
; KLOOP_PROLOGUE + n * KLOOP_K + KLOOP_EPILOGUE instructions (n = 0 too:
; its jz lands on the same single `jmp` both loop exits execute).
;
; Command line: n=N (iterations, default 100000, clamped to 2^32 - 1: the
; count register is 32 bits), reps=R (default 1, maximum 1000).  Output, one
; line, then debug-exit 0x10:
;   bench-kloop: n=N instructions=I reps=R checksum=XXXXXXXX

%include "multiboot.inc"
%include "uart.inc"
%include "debugexit.inc"

N_DEFAULT       equ 100000
REPS_DEFAULT    equ 1
REPS_MAX        equ 1000

KLOOP_K         equ 18          ; .loop: 9 xorshift + movzx + load + imul + store + test + jz + 3 (either arm)
KLOOP_PROLOGUE  equ 6           ; mov, mov, xor, mov, test, jz
KLOOP_EPILOGUE  equ 3           ; jmp, mov, ret
KLOOP_C         equ KLOOP_PROLOGUE + KLOOP_EPILOGUE
KLOOP_SEED      equ 0x2545F491  ; xorshift32 state; any non-zero value
TABLE_ENTRIES   equ 256         ; indexed by the state's low byte
TABLE_MUL       equ 0x9E3779B1  ; table[i] = i * TABLE_MUL + 1 before the first rep
BRANCH_BIT      equ 1 << 16     ; the data-dependent branch tests this bit of the product

PAGE_SIZE       equ 4096
PTE_P_W         equ 0x3         ; present, writable (supervisor)
CR0_PE          equ 1 << 0
CR0_WP          equ 1 << 16
CR0_PG          equ 1 << 31
CODE_SEL        equ 0x08
DATA_SEL        equ 0x10

        global _start, measure_start, measure_end

        section .multiboot progbits alloc noexec nowrite align=4
        dd MB_HEADER_MAGIC
        dd MB_HEADER_FLAGS
        dd -(MB_HEADER_MAGIC + MB_HEADER_FLAGS)

        section .rodata
msg_name:       db "bench-kloop: n=", 0
msg_insns:      db " instructions=", 0
msg_reps:       db " reps=", 0
msg_checksum:   db " checksum=", 0
msg_eol:        db 13, 10, 0
key_n:          db "n=", 0
key_reps:       db "reps=", 0
hex_digits:     db "0123456789abcdef"

        align 8
gdt:            dq 0
                dq 0x00CF9A000000FFFF   ; 0x08: flat 32-bit code, DPL 0
                dq 0x00CF92000000FFFF   ; 0x10: flat data, DPL 0
gdt_end:
gdt_desc:       dw gdt_end - gdt - 1
                dd gdt

        section .bss nobits alloc write align=4096
page_dir:       resd 1024
page_table:     resd 1024
table:          resd TABLE_ENTRIES
stack:          resb 4096
stack_top:
bss_end:
mb_cmdline:     resd 1
bench_n:        resd 1
bench_reps:     resd 1
kloop_result:   resd 1
checksum:       resd 1

        section .text
        bits 32
_start:
        cli
        cld
        mov ebp, ebx                    ; multiboot info
        lgdt [gdt_desc]
        jmp CODE_SEL:.flat
.flat:
        mov ax, DATA_SEL
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov fs, ax
        mov gs, ax
        mov esp, stack_top
        UART_INIT

        xor eax, eax                    ; zero the tables (the loader need not)
        mov edi, page_dir
        mov ecx, (bss_end - page_dir) / 4
        rep stosd
        mov dword [mb_cmdline], 0
        test dword [ebp + MBI_FLAGS], MBI_FLAG_CMDLINE
        jz .no_cmdline
        mov eax, [ebp + MBI_CMDLINE]
        mov [mb_cmdline], eax
.no_cmdline:
        mov esi, key_n
        mov eax, N_DEFAULT
        call cmdline_get
        mov [bench_n], eax
        mov esi, key_reps
        mov eax, REPS_DEFAULT
        call cmdline_get
        test eax, eax
        jnz .reps_nonzero
        mov eax, 1
.reps_nonzero:
        cmp eax, REPS_MAX
        jbe .reps_ok
        mov eax, REPS_MAX
.reps_ok:
        mov [bench_reps], eax

        xor ecx, ecx                    ; page table: 0..4 MiB identity, 4 KiB pages
.pte:
        mov eax, ecx
        shl eax, 12
        or eax, PTE_P_W
        mov [page_table + ecx * 4], eax
        inc ecx
        cmp ecx, 1024
        jb .pte
        mov dword [page_dir], page_table + PTE_P_W
        xor eax, eax                    ; CR4.PSE = CR4.PAE = 0: 32-bit paging, 4 KiB pages
        mov cr4, eax
        mov eax, page_dir
        mov cr3, eax
        mov eax, cr0
        or eax, CR0_PE | CR0_WP | CR0_PG
        mov cr0, eax
        jmp .paged
.paged:
        xor ecx, ecx                    ; table[i] = i * TABLE_MUL + 1
.fill:
        imul eax, ecx, TABLE_MUL
        inc eax
        mov [table + ecx * 4], eax
        inc ecx
        cmp ecx, TABLE_ENTRIES
        jb .fill

        mov ebx, [bench_reps]
        mov dword [checksum], 0
.rep:
        mov ecx, [bench_n]
        push ebx
        call kloop
        pop ebx
        mov eax, [checksum]
        rol eax, 7
        xor eax, [kloop_result]
        mov [checksum], eax
        dec ebx
        jnz .rep

        mov esi, msg_name
        call puts
        mov eax, [bench_n]
        xor edx, edx
        call put_dec64
        mov esi, msg_insns
        call puts
        mov eax, [bench_n]              ; reps * (K * n + C), 64 bits
        mov ecx, KLOOP_K
        mul ecx
        add eax, KLOOP_C
        adc edx, 0
        mov ecx, [bench_reps]
        mov ebx, eax                    ; (hi:lo) * reps with reps < 2^10
        mov eax, edx
        mul ecx
        mov edi, eax
        mov eax, ebx
        mul ecx
        add edx, edi
        call put_dec64
        mov esi, msg_reps
        call puts
        mov eax, [bench_reps]
        xor edx, edx
        call put_dec64
        mov esi, msg_checksum
        call puts
        mov eax, [checksum]
        call put_hex32
        mov esi, msg_eol
        call puts
        DEBUG_EXIT EXIT_SUCCESS_VALUE

; kloop(ecx = n): the measured part.  Result in kloop_result.
measure_start:                          ; (same address: the measured part's first instruction)
kloop:
        mov ebx, KLOOP_SEED             ; prologue 1: xorshift32 state
        mov esi, table                  ; 2
        xor ebp, ebp                    ; 3: accumulator
        mov edi, ecx                    ; 4: iterations left
        test edi, edi                   ; 5
        jz .exit                        ; 6: n = 0 runs no iteration
.loop:
        mov eax, ebx                    ; 1
        shl eax, 13                     ; 2
        xor ebx, eax                    ; 3
        mov eax, ebx                    ; 4
        shr eax, 17                     ; 5
        xor ebx, eax                    ; 6
        mov eax, ebx                    ; 7
        shl eax, 5                      ; 8
        xor ebx, eax                    ; 9: x = xorshift32(x)
        movzx edx, bl                   ; 10: index
        mov eax, [esi + edx * 4]        ; 11: table load
        imul eax, ebx                   ; 12
        mov [esi + edx * 4], eax        ; 13: store back
        test eax, BRANCH_BIT            ; 14
        jz .even                        ; 15
        add ebp, eax                    ; 16 (odd)
        dec edi                         ; 17 (odd)
        jnz .loop                       ; 18 (odd)
        jmp .done                       ; epilogue 1 (after the odd arm)
.even:
        xor ebp, eax                    ; 16 (even)
        dec edi                         ; 17 (even)
        jnz .loop                       ; 18 (even)
.exit:
        jmp .done                       ; epilogue 1 (after the even arm, or n = 0)
.done:
        mov [kloop_result], ebp         ; epilogue 2
measure_end:
        ret                             ; epilogue 3: ends the measured part

; cmdline_get(esi = "key=", eax = default) -> eax: the decimal after the
; first "key=" that starts the command line or follows a space; clamped to
; 2^32 - 1.  Clobbers ebx, ecx, edx, edi.
cmdline_get:
        mov edi, [mb_cmdline]
        test edi, edi
        jz .ret
        push eax
        mov bl, ' '                     ; previous character: a word starts here
.scan:
        mov al, [edi]
        test al, al
        jz .missing
        cmp bl, ' '
        jne .next
        xor ecx, ecx                    ; compare the key
.cmp:
        mov dl, [esi + ecx]
        test dl, dl
        jz .found
        cmp dl, [edi + ecx]
        jne .next
        inc ecx
        jmp .cmp
.next:
        mov bl, [edi]
        inc edi
        jmp .scan
.found:
        add edi, ecx
        add esp, 4
        xor eax, eax
.digit:
        movzx ecx, byte [edi]
        sub ecx, '0'
        cmp ecx, 9
        ja .ret
        mov edx, 10
        mul edx
        jc .clamp
        add eax, ecx
        jc .clamp
        inc edi
        jmp .digit
.clamp:
        mov eax, 0xFFFFFFFF
        ret
.missing:
        pop eax
.ret:
        ret

; puts(esi = NUL-terminated string).  Clobbers eax, edx, esi.
puts:
        mov ah, [esi]
        test ah, ah
        jz .done
        UART_PUTC_AH
        inc esi
        jmp puts
.done:
        ret

; put_dec64(edx:eax): unsigned decimal.  Clobbers eax-edx, esi, edi.
put_dec64:
        mov edi, esp
        sub esp, 24
.div:
        mov ecx, 10
        mov ebx, eax
        mov eax, edx
        xor edx, edx
        div ecx                         ; high half
        mov esi, eax
        mov eax, ebx
        div ecx                         ; (remainder : low half) / 10
        add dl, '0'
        dec edi
        mov [edi], dl
        mov edx, esi
        mov ebx, eax
        or ebx, edx
        jnz .div
.out:
        mov ah, [edi]
        UART_PUTC_AH
        inc edi
        lea eax, [esp + 24]
        cmp edi, eax
        jb .out
        add esp, 24
        ret

; put_hex32(eax): eight hex digits.  Clobbers eax, ebx, ecx, edx.
put_hex32:
        mov ebx, eax
        mov ecx, 8
.nibble:
        rol ebx, 4
        mov eax, ebx
        and eax, 0xF
        mov ah, [hex_digits + eax]
        UART_PUTC_AH
        dec ecx
        jnz .nibble
        ret

; Multiboot v1 entry: from 32-bit protected mode to 64-bit long mode.
;
; A multiboot loader enters `_start` in 32-bit protected mode with flat
; segments, paging and interrupts off, EAX = 0x2BADB002 and EBX = physical
; address of the multiboot information (Multiboot Spec 0.6.96 §3.2).  We
; check the magic, copy the command line before anything can overwrite it,
; zero our .bss, load our GDT, build 4-level page tables and enable long mode
; (SDM 3A §10.8.5: CR4.PAE, CR3, EFER.LME, then CR0.PG), then far-jump to
; 64-bit code and call the guest's `kmain`.

%include "x86.inc"
%include "multiboot.inc"
%include "uart.inc"
%include "debugexit.inc"
%include "gdt.inc"

CMDLINE_MAX     equ 256         ; bytes kept of the command line, NUL included
BOOT_STACK_SIZE equ 16384

        extern __zero_start, __zero_end, kmain, gdt_load32, paging_enable32
        global _start, cmdline_buf, mb_info_addr, boot_stack_top

        section .multiboot progbits alloc noexec nowrite align=4
mb_header:
        dd MB_HEADER_MAGIC
        dd MB_HEADER_FLAGS
        dd -(MB_HEADER_MAGIC + MB_HEADER_FLAGS)   ; checksum: the three add up to 0

        section .data
cmdline_buf:    times CMDLINE_MAX db 0  ; in .data, not .bss: filled before .bss is zeroed
mb_info_addr:   dd 0
bad_magic_msg:  db "boot: not started by a multiboot loader", 13, 10, 0

        section .bss nobits alloc write align=16
boot_stack:     resb BOOT_STACK_SIZE
boot_stack_top:

        section .text
        bits 32
_start:
        cli
        cld
        mov esi, eax                    ; keep the magic and the info pointer
        mov ebp, ebx
        UART_INIT                       ; early, so a failure can be reported
        cmp esi, MB_BOOT_MAGIC
        jne .bad_magic

        test dword [ebp + MBI_FLAGS], MBI_FLAG_CMDLINE
        jz .no_cmdline
        mov esi, [ebp + MBI_CMDLINE]
        mov edi, cmdline_buf
        mov ecx, CMDLINE_MAX - 1
.copy:
        lodsb
        test al, al
        jz .copied
        stosb
        loop .copy
.copied:
        mov byte [edi], 0
.no_cmdline:
        mov [mb_info_addr], ebp

        mov edi, __zero_start           ; the loader need not have zeroed .bss
        mov ecx, __zero_end
        sub ecx, edi
        shr ecx, 2
        xor eax, eax
        rep stosd

        mov esp, boot_stack_top
        call gdt_load32
        call paging_enable32            ; now in compatibility mode (IA-32e, 32-bit CS)
        jmp SEL_KCODE64:long_entry

.bad_magic:
        mov esi, bad_magic_msg
.next:
        lodsb
        test al, al
        jz .fail
        mov ah, al
        UART_PUTC_AH
        jmp .next
.fail:
        DEBUG_EXIT EXIT_FAILURE_VALUE

        bits 64
long_entry:
        mov ax, SEL_KDATA
        mov ds, ax
        mov es, ax
        mov ss, ax
        xor eax, eax
        mov fs, ax
        mov gs, ax
        mov esp, boot_stack_top         ; zero-extends into rsp
        call kmain
        DEBUG_EXIT EXIT_FAILURE_VALUE   ; kmain must not return

; The kernel GDT and the 64-bit TSS (SDM 3A §3.4.5, §8.7).
;
; In 64-bit mode code segments only contribute L, D, DPL and P; data
; segments are flat whatever their base/limit (SDM 3A §3.2.4), but we still
; describe them as flat 4 GiB so they work in the 32-bit entry path too.

%include "gdt.inc"

; Access byte (SDM 3A §3.4.5, Figure 3-8).
ACC_P           equ 0x80        ; present
ACC_DPL3        equ 0x60        ; descriptor privilege level 3
ACC_S           equ 0x10        ; code/data (not a system descriptor)
ACC_CODE        equ 0x08        ; executable
ACC_RW          equ 0x02        ; readable code / writable data
ACC_TSS64       equ 0x09        ; system type: available 64-bit TSS
; Flags nibble (descriptor bits 55:52).
FLG_G           equ 0x8         ; limit counts 4 KiB units
FLG_DB          equ 0x4         ; 32-bit default operand size
FLG_L           equ 0x2         ; 64-bit code segment

; SEGMENT access, flags: a flat (base 0, limit 4 GiB) code or data descriptor.
%macro SEGMENT 2
        dq 0xFFFF | ((%1) << 40) | (0xF << 48) | ((%2) << 52)
%endmacro

        global gdt, tss, gdt_load32, tss_install

        section .data
        align 16
gdt:
        dq 0                                                    ; 0x00 null
        SEGMENT ACC_P | ACC_S | ACC_CODE | ACC_RW, FLG_G | FLG_L            ; 0x08 kcode64
        SEGMENT ACC_P | ACC_S | ACC_RW, FLG_G | FLG_DB                      ; 0x10 kdata
        SEGMENT ACC_P | ACC_S | ACC_CODE | ACC_RW, FLG_G | FLG_DB           ; 0x18 kcode32
        SEGMENT ACC_P | ACC_DPL3 | ACC_S | ACC_RW, FLG_G | FLG_DB           ; 0x20 udata
        SEGMENT ACC_P | ACC_DPL3 | ACC_S | ACC_CODE | ACC_RW, FLG_G | FLG_L ; 0x28 ucode64
tss_desc:
        dq 0, 0                         ; 0x30 TSS, 16 bytes, filled by tss_install
gdt_end:

gdt_ptr:
        dw gdt_end - gdt - 1
        dd gdt, 0                       ; 64-bit base for lgdt in long mode

        align 16
tss:
        times TSS_IOPB db 0
        dw TSS_SIZE                     ; I/O bitmap beyond the limit: ring 3 gets no ports

        section .text
        bits 32
; gdt_load32: load our GDT and reload every segment register (32-bit code).
gdt_load32:
        lgdt [gdt_ptr]
        jmp SEL_KCODE32:.reload
.reload:
        mov ax, SEL_KDATA
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov fs, ax
        mov gs, ax
        ret

        bits 64
        default rel
; tss_install(rdi = RSP0, rsi = IST1): fill the TSS and its descriptor, then ltr.
tss_install:
        mov [tss + TSS_RSP0], rdi
        mov [tss + TSS_IST1], rsi
        mov eax, tss                    ; base (below 4 GiB)
        mov rdx, rax
        shl rdx, 16                     ; base 23:0 -> bits 39:16
        mov rcx, 0xFFFFFF << 16
        and rdx, rcx
        mov rcx, rax
        shr rcx, 24
        shl rcx, 56                     ; base 31:24 -> bits 63:56
        or rdx, rcx
        mov rcx, ((ACC_P | ACC_TSS64) << 40) | (TSS_SIZE - 1)
        or rdx, rcx
        mov [tss_desc], rdx
        mov qword [tss_desc + 8], 0     ; base 63:32 = 0
        mov ax, SEL_TSS
        ltr ax
        ret

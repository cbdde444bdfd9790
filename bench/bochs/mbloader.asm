; A minimal multiboot v1 loader in one boot sector, for Bochs.
;
; Bochs boots disks through its BIOS but cannot load a multiboot kernel the
; way QEMU's -kernel does, so `python -m bench` builds a disk image:
;   LBA 0          this boot sector
;   LBA 1          the kernel command line (NUL-terminated, 512 bytes)
;   LBA 2 ..       the ELF32 kernel file
; The BIOS loads LBA 0 at 0000:7C00 in real mode with DL = the boot drive.
; We read LBA 1.. to LOAD_ADDR with INT 13h AH=42h (EDD extended read),
; enable A20 (port 0x92), enter 32-bit protected mode, copy each PT_LOAD
; segment of the ELF to its physical address (zeroing the rest of its
; memory size), build a multiboot information block with the command line
; and memory sizes, and enter the kernel with EAX = 0x2BADB002, EBX = the
; information block: what Multiboot Spec 0.6.96 §3.2 promises a kernel.

SECTORS         equ 127         ; sectors read after this one (64 KiB - 512: a kernel < 63 KiB)
LOAD_SEG        equ 0x1000      ; real-mode segment of LOAD_ADDR
LOAD_ADDR       equ 0x10000     ; the command line here, the ELF 512 bytes later
ELF_ADDR        equ LOAD_ADDR + 512
MBI_ADDR        equ 0x9000      ; the multiboot information block
STACK_TOP       equ 0x7C00
MB_BOOT_MAGIC   equ 0x2BADB002
MBI_MEM         equ 1 << 0      ; mem_lower/mem_upper valid
MBI_CMDLINE     equ 1 << 2      ; cmdline valid
PT_LOAD         equ 1
%ifndef MEM_UPPER_KIB
MEM_UPPER_KIB   equ 63 * 1024   ; RAM above 1 MiB (the suite passes -DMEM_UPPER_KIB)
%endif

        org 0x7C00
        bits 16
start:
        cli
        xor ax, ax
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov sp, STACK_TOP
        mov si, dap
        mov ah, 0x42                    ; EDD: extended read (DL = boot drive)
        int 0x13
        jc fail
        in al, 0x92                     ; fast A20 gate
        or al, 2
        and al, 0xFE                    ; bit 0 would reset the machine
        out 0x92, al
        lgdt [gdt_ptr]
        mov eax, cr0
        or eax, 1
        mov cr0, eax
        jmp 0x08:pm32

fail:
        mov si, msg_fail
.next:
        lodsb
        test al, al
        jz .halt
        mov ah, 0x0E                    ; teletype output
        int 0x10
        jmp .next
.halt:
        hlt
        jmp .halt

        bits 32
pm32:
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov esp, STACK_TOP
        cld
        mov ebx, ELF_ADDR
        movzx ecx, word [ebx + 44]      ; e_phnum
        mov ebp, [ebx + 28]             ; e_phoff
        add ebp, ebx
.segment:
        cmp dword [ebp], PT_LOAD        ; p_type
        jne .skip
        mov esi, [ebp + 4]              ; p_offset
        add esi, ebx
        mov edi, [ebp + 12]             ; p_paddr
        mov edx, [ebp + 20]             ; p_memsz
        push ecx
        mov ecx, [ebp + 16]             ; p_filesz
        sub edx, ecx
        rep movsb
        mov ecx, edx
        xor eax, eax
        rep stosb
        pop ecx
.skip:
        movzx eax, word [ebx + 42]      ; e_phentsize
        add ebp, eax
        loop .segment

        mov edi, MBI_ADDR               ; flags, mem_lower, mem_upper, boot_device, cmdline
        mov dword [edi], MBI_MEM | MBI_CMDLINE
        mov dword [edi + 4], 640
        mov dword [edi + 8], MEM_UPPER_KIB
        mov dword [edi + 12], 0
        mov dword [edi + 16], LOAD_ADDR
        mov eax, MB_BOOT_MAGIC
        mov ecx, [ebx + 24]             ; e_entry
        mov ebx, MBI_ADDR
        jmp ecx

        align 8
gdt:
        dq 0
        dq 0x00CF9A000000FFFF           ; 0x08: flat 32-bit code
        dq 0x00CF92000000FFFF           ; 0x10: flat data
gdt_ptr:
        dw gdt_ptr - gdt - 1
        dd gdt
dap:                                    ; EDD disk address packet
        db 16, 0
        dw SECTORS
        dw 0, LOAD_SEG                  ; buffer offset, segment
        dq 1                            ; first LBA
msg_fail:
        db "mbloader: disk read failed", 0

        times 510 - ($ - $$) db 0
        dw 0xAA55

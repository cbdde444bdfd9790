; linuxboot.bin: pyvmm's option ROM that boots a Linux kernel from fw_cfg
; through its 16-bit real-mode setup code (`pyvmm run --linux-entry real`).
;
; An ISA-style (PCI-less) option ROM, BIOS Boot Specification 1.01:
;   - the header (§3.1 / Appendix A): 0x55 0xAA, the size in 512-byte
;     blocks, the initialisation entry at offset 3, the PnP expansion header's
;     offset at 0x1A; every byte of the ROM sums to 0 (sign.py fills the
;     checksums and the size);
;   - a PnP expansion header ("$PnP", revision 1, length 2 = 32 bytes, its own
;     checksum) whose Bootstrap Entry Vector (offset 0x1A) is `bev` below: the
;     BIOS adds it to its IPL table and far-calls it at boot time (§3.3).
; pyvmm publishes it as fw_cfg file genroms/linuxboot.bin and names it first
; in "bootorder" (/rom@genroms/linuxboot.bin), so SeaBIOS boots it.
;
; The BEV copies what pyvmm laid out (pyvmm/boot/linux_real.py, from
; Documentation/arch/x86/boot.rst) into RAM with fw_cfg DMA (QEMU
; docs/specs/fw_cfg.rst: a be32 control, be32 length, be64 address structure;
; physical addresses, so it works from real mode): the kernel's setup sectors,
; the protected-mode kernel, the command line and the initrd, each at the
; address in its *_ADDR item.  Then, boot.rst "Running the kernel": interrupts
; off, SS = DS = ES = FS = GS = the setup segment, SP = the heap end
; (heap_end_ptr + 0x200), and a far jump to setup segment + 0x20 : 0.
; Should anything be missing it says so through INT 10h (SeaBIOS copies it
; to the serial console) and returns to the BIOS, which tries the next device.

BITS 16
ORG 0

FW_CFG_SELECTOR equ 0x510
FW_CFG_DATA     equ 0x511
FW_CFG_DMA_HIGH equ 0x514
FW_CFG_DMA_LOW  equ 0x518

FW_CFG_ID          equ 0x01
FW_CFG_ID_DMA      equ 1 << 1
FW_CFG_SETUP_ADDR  equ 0x16
FW_CFG_DMA_ERROR   equ 0x01
FW_CFG_DMA_READ    equ 0x02
FW_CFG_DMA_SELECT  equ 0x08

HEAP_END_PTR equ 0x224          ; setup header field (boot.rst)
SETUP_CODE_PARAS equ 0x20       ; the setup code starts 0x200 bytes in

rom_start:
    db 0x55, 0xAA
    db 0                        ; size in 512-byte blocks (sign.py)
    jmp short init              ; offset 3: initialisation entry
    times 0x18 - ($ - $$) db 0
    dw 0                        ; 0x18: no PCI data structure
    dw pnp_header               ; 0x1A: the PnP expansion header

    align 16
pnp_header:
    db "$PnP"                   ; 00h signature
    db 1                        ; 04h structure revision
    db 2                        ; 05h length in 16-byte units
    dw 0                        ; 06h offset of the next header: none
    db 0                        ; 08h reserved
    db 0                        ; 09h checksum (sign.py)
    dd 0                        ; 0Ah device identifier
    dw manufacturer             ; 0Eh manufacturer string
    dw product                  ; 10h product name string
    db 0, 0, 0                  ; 12h device type code
    db 0                        ; 15h device indicators
    dw 0                        ; 16h boot connection vector: none
    dw 0                        ; 18h disconnect vector: none
    dw bev                      ; 1Ah bootstrap entry vector
    dw 0                        ; 1Ch reserved
    dw 0                        ; 1Eh static resource information vector

manufacturer: db "pyvmm", 0
product:      db "Linux (fw_cfg)", 0

; The initialisation entry: nothing to set up; AX = 0 (no devices attached
; that need the BIOS's attention, BBS §3.2 / Appendix A).
init:
    xor ax, ax
    retf

; The items, in the order copied: (address item, size item, data item).
items:
    dw 0x07, 0x08, 0x11         ; kernel (protected-mode part)
    dw 0x0A, 0x0B, 0x12         ; initrd
    dw 0x13, 0x14, 0x15         ; command line
    dw 0x16, 0x17, 0x18         ; setup (real-mode part)
items_end:

bev:
    cli
    cld
    push cs
    pop ds
    mov ax, FW_CFG_ID
    call fw_cfg_read32
    test al, FW_CFG_ID_DMA
    jz .no_dma
    mov ax, FW_CFG_SETUP_ADDR + 1   ; SETUP_SIZE
    call fw_cfg_read32
    test eax, eax
    jz .no_kernel
    mov si, items
.next:
    mov ax, [si]
    call fw_cfg_read32
    mov edi, eax                ; where
    mov ax, [si + 2]
    call fw_cfg_read32
    mov ecx, eax                ; how many bytes
    mov ax, [si + 4]
    test ecx, ecx
    jz .skip
    call fw_cfg_dma_read
    jc .dma_failed
.skip:
    add si, 6
    cmp si, items_end
    jb .next

    mov ax, FW_CFG_SETUP_ADDR
    call fw_cfg_read32
    shr eax, 4
    mov bx, ax                  ; the setup segment
    mov ds, bx
    mov es, bx
    mov fs, bx
    mov gs, bx
    mov ax, [HEAP_END_PTR]
    add ax, 0x200               ; heap_end = heap_end_ptr + 0x200
    mov ss, bx
    mov sp, ax
    add bx, SETUP_CODE_PARAS
    push bx
    push word 0
    retf                        ; jmp setup_seg+0x20:0

.no_dma:
    mov si, msg_no_dma
    jmp fail
.no_kernel:
    mov si, msg_no_kernel
    jmp fail
.dma_failed:
    mov si, msg_dma_failed
fail:                           ; DS = CS: print [si], give the boot back
    push cs
    pop ds
.char:
    lodsb
    test al, al
    jz .done
    mov ah, 0x0E                ; INT 10h teletype output
    mov bx, 0x0007
    int 0x10
    jmp .char
.done:
    retf

; ax = selector -> eax = the item's first four bytes (little-endian).
; Clobbers dx.
fw_cfg_read32:
    mov dx, FW_CFG_SELECTOR
    out dx, ax
    inc dx
    in al, dx
    ror eax, 8
    in al, dx
    ror eax, 8
    in al, dx
    ror eax, 8
    in al, dx
    ror eax, 8
    ret

; ax = item selector, edi = physical destination, ecx = length.
; DMA-reads the item from its start; CF set if the device reported an error.
; The FWCfgDmaAccess structure lives on the stack.  Clobbers eax, ebx, ecx,
; edx, edi.
fw_cfg_dma_read:
    push bp
    movzx eax, ax
    shl eax, 16
    or eax, FW_CFG_DMA_SELECT | FW_CFG_DMA_READ
    bswap eax
    bswap ecx
    bswap edi
    push edi                    ; +12 be64 address, low half
    push dword 0                ; +8  be64 address, high half
    push ecx                    ; +4  be32 length
    push eax                    ; +0  be32 control
    mov bp, sp
    xor eax, eax
    mov ax, ss
    shl eax, 4
    movzx ebx, sp
    add ebx, eax                ; the structure's physical address
    bswap ebx
    xor eax, eax
    mov dx, FW_CFG_DMA_HIGH
    out dx, eax
    mov eax, ebx
    mov dx, FW_CFG_DMA_LOW
    out dx, eax                 ; starts the transfer
.wait:
    mov eax, [bp]
    bswap eax
    test eax, ~FW_CFG_DMA_ERROR
    jnz .wait
    add sp, 16
    pop bp
    shr al, 1                   ; CF = the error bit
    ret

msg_no_dma:     db "linuxboot: fw_cfg has no DMA interface", 13, 10, 0
msg_no_kernel:  db "linuxboot: fw_cfg has no kernel", 13, 10, 0
msg_dma_failed: db "linuxboot: fw_cfg DMA failed", 13, 10, 0

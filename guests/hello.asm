; hello: the smallest bundled guest, a 512-byte boot sector.
;
; A PC BIOS loads sector 0 of the boot disk at 0000:7C00 and jumps to it in
; real mode with DL = boot drive (0x80 for the first hard disk), after
; checking the 0x55 0xAA signature in bytes 510-511 (IBM PC/AT BIOS boot
; protocol).  This guest sets up COM1, prints one line by polling LSR.THRE
; and leaves through the debug-exit port with success (0x10).

%include "uart.inc"
%include "debugexit.inc"

BOOT_ADDR       equ 0x7C00      ; where the BIOS loads the boot sector
SECTOR_SIZE     equ 512
BOOT_SIGNATURE  equ 0xAA55      ; bytes 0x55, 0xAA at offsets 510, 511

        bits 16
        org BOOT_ADDR

start:
        cli
        cld
        xor ax, ax
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov sp, BOOT_ADDR
        jmp 0:.flat_cs                  ; some BIOSes enter at 07C0:0000
.flat_cs:
        UART_INIT
        mov si, message
.next:
        lodsb
        test al, al
        jz .done
        mov ah, al
        UART_PUTC_AH
        jmp .next
.done:
        DEBUG_EXIT EXIT_SUCCESS_VALUE

message:
        db "Hello from a pyvmm boot sector!", 13, 10, 0

        times SECTOR_SIZE - 2 - ($ - $$) db 0
        dw BOOT_SIGNATURE

; flood: write to COM1 as fast as possible, forever: a 4 KiB block of text
; per REP OUTSB (KVM hands a string OUT to user space as one exit carrying
; up to a page of data), never waiting for the transmitter.

%include "common.inc"

BLOCK equ 4096

start:
    mov esp, 0x7000
    mov edi, block                      ; build the block: lines of 63 'x' + LF
    mov ecx, BLOCK
    xor ebx, ebx
.fillblock:
    mov al, 'x'
    inc ebx
    cmp ebx, 64
    jne .store
    xor ebx, ebx
    mov al, 10
.store:
    mov [edi], al
    inc edi
    loop .fillblock
    cld
.again:
    mov esi, block
    mov ecx, BLOCK
    mov dx, COM1_THR
    rep outsb
    jmp .again

align 16
block: times BLOCK db 0

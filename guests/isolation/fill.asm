; fill: fill all of this VM's RAM (below 640 KiB, and from the end of this
; image to the top of RAM) with PATTERN, then read it all back.  Prints
; "fill: ok" and exits with status 33 if every dword still holds PATTERN,
; "fill: MISMATCH" and status 35 if anything else changed it.
;
; Build: nasm -f bin -DPATTERN=0x5A17F111 -o fill.bin fill.asm

%ifndef PATTERN
%define PATTERN 0x5A17F111
%endif

%include "common.inc"

LOW_RAM_END  equ 0x9FC00                ; below the EBDA convention (top KiB of 640)

start:
    mov ebp, [ebx + MB_INFO_MEM_UPPER]  ; read before the fill overwrites it
    shl ebp, 10
    add ebp, 0x100000                   ; EBP = end of RAM
    cld
    mov eax, PATTERN
    xor edi, edi
    mov ecx, LOW_RAM_END / 4
    rep stosd
    mov edi, fill_start
    mov ecx, ebp
    sub ecx, edi
    shr ecx, 2
    rep stosd
    ; Read everything back (no stack use until this is done: the stack is filled too).
    xor edi, edi
    mov ecx, LOW_RAM_END / 4
    repe scasd
    jne .bad
    mov edi, fill_start
    mov ecx, ebp
    sub ecx, edi
    shr ecx, 2
    repe scasd
    jne .bad
    mov esp, LOW_RAM_END
    mov esi, msg_ok
    call puts
    mov al, EXIT_OK
    jmp exit
.bad:
    mov esp, LOW_RAM_END
    mov esi, msg_bad
    call puts
    mov al, EXIT_FAIL
    jmp exit

msg_ok:  db "fill: ok", 10, 0
msg_bad: db "fill: MISMATCH", 10, 0

align 4096
fill_start:

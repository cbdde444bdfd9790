; spin: print one line, then spin forever with interrupts off.  Nothing in
; the guest can end this; only the VM's own timeout stops it.

%include "common.inc"

start:
    mov esp, 0x7000
    mov esi, msg
    call puts
    cli
    jmp $

msg: db "spin: spinning with interrupts off", 10, 0

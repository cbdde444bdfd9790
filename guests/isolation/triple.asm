; triple: print one line, then raise #UD with no IDT (IDTR limit 0): #UD
; cannot be delivered (#GP), nor can #GP (#DF), nor #DF: a triple fault,
; i.e. CPU shutdown (Intel SDM Vol. 3A §6.15, "Interrupt 8 - Double Fault").

%include "common.inc"

start:
    mov esp, 0x7000
    mov esi, msg
    call puts
    ud2

msg: db "triple: faulting now", 10, 0

; 8259A PIC pair driver (8259A datasheet: ICW1-ICW4 initialisation, OCW1
; masks, OCW2 EOI, OCW3 register reads).

%include "pic.inc"

        global pic_remap, pic_mask, pic_unmask, pic_eoi, pic_in_service

        section .data
pic_imr:        dw 0xFFFF       ; shadow of both IMRs (bit n = IRQ n masked)

        section .text
        bits 64
        default rel

; pic_remap: IRQ0-7 -> vectors 0x20-0x27, IRQ8-15 -> 0x28-0x2F, all masked.
pic_remap:
        mov al, ICW1_INIT_ICW4
        out PIC1_CMD, al
        out PIC2_CMD, al
        mov al, PIC_IRQ_BASE            ; ICW2: vector base
        out PIC1_DATA, al
        mov al, PIC_SLAVE_BASE
        out PIC2_DATA, al
        mov al, ICW3_MASTER
        out PIC1_DATA, al
        mov al, ICW3_SLAVE
        out PIC2_DATA, al
        mov al, ICW4_8086
        out PIC1_DATA, al
        out PIC2_DATA, al
        mov eax, 0xFFFF
        jmp pic_write_imr

; pic_mask(edi = irq) / pic_unmask(edi = irq)
pic_mask:
        mov ecx, edi
        mov edx, 1
        shl edx, cl
        movzx eax, word [pic_imr]
        or eax, edx
        jmp pic_write_imr
pic_unmask:
        mov ecx, edi
        mov edx, 1
        shl edx, cl
        not edx
        movzx eax, word [pic_imr]
        and eax, edx
        ; fall through
pic_write_imr:                          ; ax = new masks
        mov [pic_imr], ax
        out PIC1_DATA, al               ; OCW1
        mov al, ah
        out PIC2_DATA, al
        ret

; pic_eoi(edi = irq): non-specific EOI to the slave (IRQ 8-15) and the master.
pic_eoi:
        mov al, OCW2_EOI
        cmp edi, 8
        jb .master
        out PIC2_CMD, al
.master:
        out PIC1_CMD, al
        ret

; pic_in_service(edi = irq) -> eax = 1 if the IRQ's ISR bit is set.
pic_in_service:
        mov al, OCW3_READ_ISR
        out PIC1_CMD, al
        out PIC2_CMD, al
        in al, PIC2_CMD
        mov ah, al
        in al, PIC1_CMD
        movzx eax, ax
        mov ecx, edi
        shr eax, cl
        and eax, 1
        ret

; 8254 PIT driver: counter 0 as a periodic IRQ0 source (8254 datasheet,
; "Mode 2: rate generator"; PC/AT input clock 1.193182 MHz).

%include "pit.inc"

        global pit_start

        section .text
        bits 64

; pit_start(edi = divisor): counter 0 fires IRQ0 every divisor input clocks.
pit_start:
        mov al, PIT_CH0_RATE
        out PIT_CMD, al
        mov eax, edi
        out PIT_CH0, al                 ; low byte, then high byte
        mov al, ah
        out PIT_CH0, al
        ret

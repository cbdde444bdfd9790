; COM1 driver: initialisation and polled transmit (PC16550D datasheet).
; With `uart_pv` set (the kernel found pyvmm), output goes through the PV
; console hypercall instead: one exit per buffer instead of two per byte.

%include "uart.inc"

        extern fmt_hex64, fmt_dec, pv_console_write
        global uart_init, uart_putc, uart_write, uart_puts, uart_put_hex64, uart_put_dec
        global uart_pv

        section .bss nobits alloc write align=8
uart_pv:        resq 1          ; nonzero: write through the PV console

        section .text
        bits 64
        default rel

; uart_init: 115200 8N1, FIFOs on, interrupts off.
uart_init:
        UART_INIT
        ret

; uart_putc(dil = byte): wait for LSR.THRE, then write THR.
uart_putc:
        cmp qword [uart_pv], 0
        jne .pv
        mov eax, edi
        mov ah, al
        UART_PUTC_AH
        ret
.pv:
        push rdi                        ; the byte, on the (identity-mapped) stack
        mov rdi, rsp
        mov esi, 1
        call pv_console_write
        pop rdi
        ret

; uart_write(rdi = buffer, rsi = length)
uart_write:
        cmp qword [uart_pv], 0
        jne pv_console_write
        push rbx
        push rbp
        mov rbx, rdi
        mov rbp, rsi
.next:
        test rbp, rbp
        jz .done
        movzx edi, byte [rbx]
        call uart_putc
        inc rbx
        dec rbp
        jmp .next
.done:
        pop rbp
        pop rbx
        ret

; uart_puts(rdi = NUL-terminated string)
uart_puts:
        cmp qword [uart_pv], 0
        jne .pv
        push rbx
        mov rbx, rdi
.next:
        movzx edi, byte [rbx]
        test edi, edi
        jz .done
        call uart_putc
        inc rbx
        jmp .next
.done:
        pop rbx
        ret
.pv:
        xor esi, esi
.strlen:
        cmp byte [rdi + rsi], 0
        je pv_console_write
        inc rsi
        jmp .strlen

; uart_put_hex64(rdi = value): 16 hex digits.
uart_put_hex64:
        sub rsp, 24
        mov rsi, rsp
        call fmt_hex64
        mov rdi, rsp
        mov esi, 16
        call uart_write
        add rsp, 24
        ret

; uart_put_dec(rdi = value): unsigned decimal.
uart_put_dec:
        sub rsp, 24
        mov rsi, rsp
        call fmt_dec
        mov rdi, rsp
        mov rsi, rax
        call uart_write
        add rsp, 24
        ret

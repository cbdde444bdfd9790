; COM1 driver: initialisation and polled transmit (PC16550D datasheet).

%include "uart.inc"

        extern fmt_hex64, fmt_dec
        global uart_init, uart_putc, uart_write, uart_puts, uart_put_hex64, uart_put_dec

        section .text
        bits 64
        default rel

; uart_init: 115200 8N1, FIFOs on, interrupts off.
uart_init:
        UART_INIT
        ret

; uart_putc(dil = byte): wait for LSR.THRE, then write THR.
uart_putc:
        mov eax, edi
        mov ah, al
        UART_PUTC_AH
        ret

; uart_write(rdi = buffer, rsi = length)
uart_write:
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

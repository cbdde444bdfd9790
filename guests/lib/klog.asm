; The kernel log: a ring buffer that decouples "printing" from the UART.
;
; Code that runs while tasks are scheduled (system calls, fault handlers)
; appends here; only the idle loop drains it to COM1.  So what reaches the
; serial port, and in which order, does not depend on when timer interrupts
; land.  Single producer context (handlers run with IF=0) and a single
; consumer (idle), so head/tail need no lock.  When full, bytes are dropped
; and counted in klog_dropped.

        extern fmt_hex64, fmt_dec, uart_putc
        global klog_putc, klog_write, klog_puts, klog_put_hex64, klog_put_dec
        global klog_getc, klog_read, klog_flush, klog_dropped

KLOG_SIZE       equ 4096        ; a power of two
KLOG_MASK       equ KLOG_SIZE - 1

        section .bss nobits alloc write align=16
klog_buf:       resb KLOG_SIZE
klog_head:      resq 1          ; total bytes ever written
klog_tail:      resq 1          ; total bytes ever read
klog_dropped:   resq 1

        section .text
        bits 64
        default rel

; klog_putc(dil = byte)
klog_putc:
        mov rax, [klog_head]
        mov rdx, rax
        sub rdx, [klog_tail]
        cmp rdx, KLOG_SIZE
        jae .full
        mov edx, eax
        and edx, KLOG_MASK
        lea rcx, [klog_buf]
        mov [rcx + rdx], dil
        inc rax
        mov [klog_head], rax
        ret
.full:
        inc qword [klog_dropped]
        ret

; klog_write(rdi = buffer, rsi = length)
klog_write:
        push rbx
        push rbp
        mov rbx, rdi
        mov rbp, rsi
.next:
        test rbp, rbp
        jz .done
        movzx edi, byte [rbx]
        call klog_putc
        inc rbx
        dec rbp
        jmp .next
.done:
        pop rbp
        pop rbx
        ret

; klog_puts(rdi = NUL-terminated string)
klog_puts:
        push rbx
        mov rbx, rdi
.next:
        movzx edi, byte [rbx]
        test edi, edi
        jz .done
        call klog_putc
        inc rbx
        jmp .next
.done:
        pop rbx
        ret

; klog_put_hex64(rdi = value)
klog_put_hex64:
        sub rsp, 24
        mov rsi, rsp
        call fmt_hex64
        mov rdi, rsp
        mov esi, 16
        call klog_write
        add rsp, 24
        ret

; klog_put_dec(rdi = value)
klog_put_dec:
        sub rsp, 24
        mov rsi, rsp
        call fmt_dec
        mov rdi, rsp
        mov rsi, rax
        call klog_write
        add rsp, 24
        ret

; klog_getc -> rax = next byte, or -1 when empty.
klog_getc:
        mov rdx, [klog_tail]
        cmp rdx, [klog_head]
        je .empty
        mov eax, edx
        and eax, KLOG_MASK
        lea rcx, [klog_buf]
        movzx eax, byte [rcx + rax]
        inc rdx
        mov [klog_tail], rdx
        ret
.empty:
        mov rax, -1
        ret

; klog_read(rdi = buffer, rsi = capacity) -> rax = bytes moved out of the log.
klog_read:
        push rbx
        push rbp
        mov rbx, rdi
        mov rbp, rsi
        xor r8d, r8d
.next:
        cmp r8, rbp
        jae .done
        call klog_getc
        test rax, rax
        js .done
        mov [rbx + r8], al
        inc r8
        jmp .next
.done:
        mov rax, r8
        pop rbp
        pop rbx
        ret

; klog_flush: drain everything to COM1 (polled).
klog_flush:
        call klog_getc
        test rax, rax
        js .done
        mov edi, eax
        call uart_putc
        jmp klog_flush
.done:
        ret

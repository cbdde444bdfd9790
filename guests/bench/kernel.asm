; The benchmark kernels' common part: command line, tables, the rep loop,
; entering and leaving ring 3, and the result line.
;
; lib/boot32.asm brings us to long mode and calls kmain.  kmain reads
; `n=N` (iterations of the measured loop) and `reps=R` (how many times the
; measured part runs, default 1), installs the TSS and IDT, lets the
; benchmark set itself up (bench_setup), calls bench_rep(n) R times and
; prints one line:
;
;   <guest_name>: n=N instructions=I reps=R<bench_extra>
;
; where I = R * bench_count(n) is the exact number of instructions of the
; measured part (each benchmark documents what that part is).  Interrupts
; stay disabled throughout (IF = 0 in ring 0 and ring 3): no timer or device
; interrupt can add instructions to the measured part.

%include "bench.inc"
%include "x86.inc"
%include "gdt.inc"
%include "frame.inc"
%include "idt.inc"
%include "debugexit.inc"

        extern tss_install, idt_install, isr_handlers, isr_ud_int80
        extern uart_puts, uart_put_dec, cmdline_get_uint
        extern guest_name, bench_setup, bench_rep, bench_count, bench_extra
        global kmain, bench_n, bench_reps, user_enter, user_resume, user_exit
        global kernel_stack_top, user_stack_top

        section .rodata
key_n:          db "n=", 0
key_reps:       db "reps=", 0
msg_n:          db ": n=", 0
msg_insns:      db " instructions=", 0
msg_reps:       db " reps=", 0
msg_eol:        db 13, 10, 0

        section .bss nobits alloc write align=4096
kernel_stack:   resb KSTACK_SIZE
kernel_stack_top:
df_stack:       resb DF_STACK_SIZE
df_stack_top:
bench_n:        resq 1
bench_reps:     resq 1
kernel_rsp:     resq 1          ; kmain's stack while ring 3 runs (see user_enter)

        section .ubss nobits alloc write align=16
user_stack:     resb USTACK_SIZE
user_stack_top:

        section .text
        bits 64
        default rel

kmain:
        lea rdi, [key_n]
        mov esi, N_DEFAULT
        mov rdx, N_MAX
        call cmdline_get_uint
        mov [bench_n], rax
        lea rdi, [key_reps]
        mov esi, REPS_DEFAULT
        mov edx, REPS_MAX
        call cmdline_get_uint
        test rax, rax
        jnz .reps_ok
        mov eax, 1                      ; reps=0 means once
.reps_ok:
        mov [bench_reps], rax

        mov edi, kernel_stack_top       ; TSS.RSP0: where a ring-3 trap lands
        mov esi, df_stack_top
        call tss_install
        call idt_install
        lea rax, [isr_ud_int80]         ; nested-KVM workaround, see lib/idt.asm
        mov [isr_handlers + VEC_UD * 8], rax
        lea rax, [user_exit]            ; SYS_EXIT, the only call most benchmarks make
        mov [isr_handlers + SYSCALL_VECTOR * 8], rax
        call bench_setup

        mov rbx, [bench_reps]
.rep:
        mov rdi, [bench_n]
        call bench_rep
        dec rbx
        jnz .rep

        lea rdi, [guest_name]
        call uart_puts
        lea rdi, [msg_n]
        call uart_puts
        mov rdi, [bench_n]
        call uart_put_dec
        lea rdi, [msg_insns]
        call uart_puts
        mov rdi, [bench_n]
        call bench_count
        imul rax, [bench_reps]
        mov rdi, rax
        call uart_put_dec
        lea rdi, [msg_reps]
        call uart_puts
        mov rdi, [bench_reps]
        call uart_put_dec
        call bench_extra
        lea rdi, [msg_eol]
        call uart_puts
        DEBUG_EXIT EXIT_SUCCESS_VALUE

; user_enter(rdi = ring-3 entry, rsi, rdx = its rdi, rsi, rcx = its RFLAGS):
; run ring-3 code on user_stack until it makes SYS_EXIT, then return.
; The iretq pops RIP, CS, RFLAGS, RSP, SS (SDM 2A "IRET": 64-bit mode always
; pops SS:RSP) and drops to CPL 3 because the new CS has RPL 3.
user_enter:
        push rbx
        push rbp
        push r12
        push r13
        push r14
        push r15
        mov [kernel_rsp], rsp
        push SEL_UDATA
        lea rax, [user_stack_top]
        push rax
        push rcx
        push SEL_UCODE64
        push rdi
        mov rdi, rsi
        mov rsi, rdx
        xor eax, eax                    ; ring 3 starts with known registers
        xor ebx, ebx
        xor ecx, ecx
        xor edx, edx
        xor ebp, ebp
        xor r8d, r8d
        xor r9d, r9d
        xor r10d, r10d
        xor r11d, r11d
        xor r12d, r12d
        xor r13d, r13d
        xor r14d, r14d
        xor r15d, r15d
        iretq

; user_resume(rdi = interrupt frame, frame.inc layout): like user_enter, but
; ring 3 starts from a whole saved frame (the benchmarks with several tasks).
user_resume:
        push rbx
        push rbp
        push r12
        push r13
        push r14
        push r15
        mov [kernel_rsp], rsp
        mov rsp, rdi
        FRAME_POP_GPRS
        add rsp, 16                     ; vector and error code
        iretq

; user_exit: the SYS_EXIT handler (isr_handlers convention, rdi = frame, or
; jumped to).  Abandons the ring-3 context and returns from user_enter /
; user_resume on the kernel stack they saved.
user_exit:
        mov rsp, [kernel_rsp]
        pop r15
        pop r14
        pop r13
        pop r12
        pop rbp
        pop rbx
        ret

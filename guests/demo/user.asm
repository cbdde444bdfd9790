; The demo's two ring-3 tasks (both run this code; rdi = task index).
;
; Lives in .utext/.udata/.ubss, which the linker script places between
; __user_start and __user_end, the only user-accessible pages.  Talks to the
; kernel only through int 0x80.  Each task does `work` slices of xorshift64*
; folded into a checksum and sleeps until the next tick after each one, so
; every slice starts on a tick: the output and all counts are the same on
; every engine as long as a tick is long enough for both tasks' slices.
; `spin=N` breaks that on purpose: task A repeats each slice N - 1 more times
; on throwaway copies of its state, so a slice can outlast a tick and the
; timer preempts it; the checksums stay those of `work=N` alone.

%include "demo.inc"
%include "idt.inc"

        global user_task_entry, user_stacks

        section .udata progbits alloc noexec write align=16
task_seeds:     dq 0x0123456789ABCDEF, 0xFEDCBA9876543210
msg_started:    db "started", 0
msg_done:       db "done checksum=", 0
hex_digits:     db "0123456789abcdef"

        section .ubss nobits alloc write align=16
user_stacks:    resb NTASKS * USTACK_SIZE

; XORSHIFT_SLICE state, checksum: one slice, SLICE_ITERS steps of
; xorshift64* folded into the checksum.  Clobbers rax, rcx, rdx, r8.
%macro XORSHIFT_SLICE 2
        mov ecx, SLICE_ITERS
        mov r8, XORSHIFT_MULT
%%step:
        mov rdx, %1                     ; x ^= x >> 12; x ^= x << 25; x ^= x >> 27
        shr rdx, 12
        xor %1, rdx
        mov rdx, %1
        shl rdx, 25
        xor %1, rdx
        mov rdx, %1
        shr rdx, 27
        xor %1, rdx
        mov rax, %1                     ; output = x * M
        imul rax, r8
        rol %2, 7
        xor %2, rax
        dec ecx
        jnz %%step
%endmacro

        section .utext progbits alloc exec nowrite align=16
        bits 64
        default rel

; user_task_entry(rdi = task index, rsi = number of slices, rdx = passes to
; throw away after each slice)
user_task_entry:
        mov r12, rdi                    ; task index (0 = A)
        mov r13, rsi                    ; slices left
        mov rbx, rdx                    ; throwaway passes per slice (spin - 1)
        lea rax, [task_seeds]
        mov r14, [rax + r12 * 8]        ; xorshift64* state
        xor r15d, r15d                  ; checksum
        lea rdi, [msg_started]
        xor esi, esi
        xor edx, edx                    ; no value after the text
        call say

        test r12, r12
        jnz .slices
        mov rax, [abs DEMAND_ADDR]      ; not mapped: the kernel maps a zero page
        add r15, rax                    ; 0 unless the page was not zeroed

.slices:
        test r13, r13
        jz .finish
.slice:
        XORSHIFT_SLICE r14, r15

        test r12, r12
        jnz .wait
        mov [abs DEMAND_ADDR + 8], r15  ; task A keeps its running checksum there
        test rbx, rbx
        jz .wait
        mov rbp, rbx
.spin:                                  ; spin=N: the same work again, thrown away
        mov r9, r14
        mov r10, r15
        XORSHIFT_SLICE r9, r10
        dec rbp
        jnz .spin
.wait:
        mov eax, SYS_WAIT_TICK
        int SYSCALL_VECTOR
        dec r13
        jnz .slice

.finish:
        test r12, r12
        jnz .report
        add r15, [abs DEMAND_ADDR + 8]  ; read it back: the page must have kept it
.report:
        lea rdi, [msg_done]
        mov rsi, r15
        mov edx, 1
        call say
        mov rdi, r15
        mov eax, SYS_EXIT
        int SYSCALL_VECTOR
        ud2                             ; exit does not return

; say(rdi = text, rsi = value, edx = 1 to append value in hex): one write of
; "task X: <text>[<value>]\r\n", built on the stack so lines never interleave.
say:
        push rbx
        sub rsp, 64
        mov rbx, rsp
        mov dword [rbx], 'task'
        mov byte [rbx + 4], ' '
        lea eax, [r12 + 'A']
        mov [rbx + 5], al
        mov word [rbx + 6], ': '
        lea r8, [rbx + 8]
.copy:
        mov al, [rdi]
        test al, al
        jz .copied
        mov [r8], al
        inc rdi
        inc r8
        jmp .copy
.copied:
        test edx, edx
        jz .eol
        mov ecx, 16
        lea r9, [hex_digits]
.hex:
        rol rsi, 4
        mov eax, esi
        and eax, 0xF
        mov al, [r9 + rax]
        mov [r8], al
        inc r8
        dec ecx
        jnz .hex
.eol:
        mov word [r8], 0x0A0D           ; "\r\n"
        add r8, 2
        mov rdi, rbx
        mov rsi, r8
        sub rsi, rbx
        mov eax, SYS_WRITE
        int SYSCALL_VECTOR
        add rsp, 64
        pop rbx
        ret

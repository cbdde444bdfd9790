; bench-sys: system calls and context switches from ring 3.
;
; Two ring-3 tasks, each with its own user stack and kernel stack.  Each
; iteration of each task makes two system calls through `int 0x80`:
; SYS_ADD (rax = rdi + rsi, computed by the kernel) and SYS_YIELD, which
; saves the task's whole context (an interrupt frame on its kernel stack)
; and resumes the other task's, switching TSS.RSP0 to the other kernel
; stack (SDM 3A §6.14.4).  So one iteration (both tasks) is 4 system calls
; and 2 context switches.
;
; Every instruction of the counted path is in this file: vector 0x80's gate
; points at sys_entry, our own copy of lib/idt.asm's entry and exit (same
; frame layout, frame.inc), so a change to lib/ cannot change the count.
; Where ring-3 `int 0x80` arrives as #UD (this project's nested KVM host),
; lib/idt.asm's isr_ud_int80 completes it through isr_handlers[0x80] =
; sys_dispatch: the same result, more instructions, which the count ignores
; (it is the count of the program on a correct CPU).
;
; Measured part: from task A's first ring-3 instruction to task B's final
; `int 0x80` (SYS_EXIT) inclusive, kernel paths in between included:
;   SYS_K per iteration n, plus SYS_C (both prologues, task A's exit
;   including the switch to B, task B's exit up to its int 0x80).

%include "bench.inc"
%include "x86.inc"
%include "gdt.inc"
%include "frame.inc"
%include "idt.inc"

SYS_ADD         equ 1           ; rax = rdi + rsi
SYS_YIELD       equ 2           ; run the other task; rax = 0
SYS_COUNT       equ 3
ENOSYS          equ 38          ; no such system call (Linux errno)
NTASKS          equ 2
GATE_INT_DPL3   equ 0xEE        ; present, DPL 3, 64-bit interrupt gate (SDM 3A Figure 6-8)

; Hand counts of each path (see the numbered comments in the code).
ENTRY_N         equ 19          ; sys_entry up to and including `call sys_dispatch`
RETURN_N        equ 18          ; sys_return: mov rsp, 15 pops, add, iretq
DISPATCH_N      equ 6           ; sys_dispatch up to and including its jmp
ADD_N           equ 5           ; sys_add
YIELD_N         equ 14          ; sys_yield, the other task alive
EXIT_SWITCH_N   equ 17          ; sys_exit, the other task alive (task A's exit)
KERNEL_N        equ ENTRY_N + DISPATCH_N + RETURN_N
USER_LOOP_N     equ 9           ; .loop in sys_user
USER_PROLOGUE_N equ 4
USER_EPILOGUE_N equ 3
SYS_K           equ NTASKS * (USER_LOOP_N + 2 * KERNEL_N + ADD_N + YIELD_N)
SYS_C           equ NTASKS * (USER_PROLOGUE_N + USER_EPILOGUE_N) + KERNEL_N + EXIT_SWITCH_N

        extern user_resume, user_exit, isr_handlers, tss, uart_puts, uart_put_hex64
        global guest_name, bench_setup, bench_rep, bench_count, bench_extra
        global measure_start, measure_end   ; first and last instruction measured

        section .rodata
guest_name:     db "bench-sys", 0
msg_checksum:   db " checksum=", 0
sys_table:                      ; indexed by rax
        dd sys_exit                     ; (32-bit: the kernel lies below 2 MiB)
        dd sys_add
        dd sys_yield

        section .bss nobits alloc write align=4096
kernel_stacks:  resb NTASKS * KSTACK_SIZE
task_frame:     resq NTASKS     ; suspended frame of each task
task_kstack:    resq NTASKS     ; top of each task's kernel stack
task_result:    resq NTASKS     ; exit(value) of each task
current:        resq 1
checksum:       resq 1
task_alive:     resb NTASKS
idtr:           resb 10         ; sidt: limit (2 bytes), base (8)

        section .ubss nobits alloc write align=16
user_stacks:    resb NTASKS * USTACK_SIZE

        section .text
        bits 64
        default rel

; bench_setup: point vector 0x80 at sys_entry (a DPL-3 interrupt gate,
; found through SIDT), and route the #UD workaround to sys_dispatch.
bench_setup:
        sidt [idtr]
        mov rax, [idtr + 2]
        add rax, SYSCALL_VECTOR * 16
        lea rdx, [sys_entry]
        mov [rax], dx                   ; offset 15:0
        mov word [rax + 2], SEL_KCODE64
        mov byte [rax + 4], 0           ; no IST
        mov byte [rax + 5], GATE_INT_DPL3
        shr rdx, 16
        mov [rax + 6], dx               ; offset 31:16
        shr rdx, 16
        mov [rax + 8], edx              ; offset 63:32
        mov dword [rax + 12], 0
        lea rax, [sys_dispatch]
        mov [isr_handlers + SYSCALL_VECTOR * 8], rax
        ret

; bench_rep(rdi = n): both tasks get a fresh first frame (an iretq into
; sys_user with rdi = task index, rsi = n); task A runs first.
bench_rep:
        mov r9, rdi
        xor r8d, r8d
.task:
        lea rdx, [r8 + 1]
        shl rdx, 12                     ; (i + 1) * KSTACK_SIZE
        lea rax, [kernel_stacks]
        add rdx, rax
        lea rcx, [task_kstack]
        mov [rcx + r8 * 8], rdx
        sub rdx, FRAME_SIZE
        mov rdi, rdx
        xor eax, eax
        mov ecx, FRAME_SIZE / 8
        rep stosq
        mov [rdx + FRAME_RDI], r8
        mov [rdx + FRAME_RSI], r9
        lea rax, [sys_user]
        mov [rdx + FRAME_RIP], rax
        mov qword [rdx + FRAME_CS], SEL_UCODE64
        mov qword [rdx + FRAME_RFLAGS], 1 << 1     ; IF = 0
        lea rax, [r8 + 1]
        shl rax, 12                     ; (i + 1) * USTACK_SIZE
        lea rcx, [user_stacks]
        add rax, rcx
        mov [rdx + FRAME_RSP], rax
        mov qword [rdx + FRAME_SS], SEL_UDATA
        lea rcx, [task_frame]
        mov [rcx + r8 * 8], rdx
        lea rcx, [task_alive]
        mov byte [rcx + r8], 1
        inc r8
        cmp r8, NTASKS
        jb .task

        mov qword [current], 0
        mov rax, [task_kstack]
        mov [tss + TSS_RSP0], rax
        mov rdi, [task_frame]
        call user_resume                ; returns when both tasks have exited
        mov rax, [task_result]
        mov rcx, [task_result + 8]
        rol rcx, 32
        xor rax, rcx
        rol qword [checksum], 7
        xor [checksum], rax
        ret

bench_count:
        imul rax, rdi, SYS_K
        add rax, SYS_C
        ret

bench_extra:
        lea rdi, [msg_checksum]
        call uart_puts
        mov rdi, [checksum]
        jmp uart_put_hex64

; sys_entry: the int 0x80 gate.  Builds lib/idt.asm's frame (frame.inc).
sys_entry:
        push 0                          ; 1: error code
        push SYSCALL_VECTOR             ; 2
        push rax                        ; 3
        push rbx                        ; 4
        push rcx                        ; 5
        push rdx                        ; 6
        push rsi                        ; 7
        push rdi                        ; 8
        push rbp                        ; 9
        push r8                         ; 10
        push r9                         ; 11
        push r10                        ; 12
        push r11                        ; 13
        push r12                        ; 14
        push r13                        ; 15
        push r14                        ; 16
        push r15                        ; 17
        mov rdi, rsp                    ; 18
        call sys_dispatch               ; 19
sys_return:
        mov rsp, rax                    ; 1: the frame to resume (maybe the other task's)
        pop r15                         ; 2
        pop r14                         ; 3
        pop r13                         ; 4
        pop r12                         ; 5
        pop r11                         ; 6
        pop r10                         ; 7
        pop r9                          ; 8
        pop r8                          ; 9
        pop rbp                         ; 10
        pop rdi                         ; 11
        pop rsi                         ; 12
        pop rdx                         ; 13
        pop rcx                         ; 14
        pop rbx                         ; 15
        pop rax                         ; 16
        add rsp, 16                     ; 17: vector and error code
        iretq                           ; 18

; sys_dispatch(rdi = frame) -> rax = frame to resume.
sys_dispatch:
        mov rax, [rdi + FRAME_RAX]      ; 1
        cmp rax, SYS_COUNT              ; 2
        jae .enosys                     ; 3
        lea rcx, [sys_table]            ; 4
        mov eax, [rcx + rax * 4]        ; 5
        jmp rax                         ; 6
.enosys:
        mov qword [rdi + FRAME_RAX], -ENOSYS
        mov rax, rdi
        ret

sys_add:
        mov rax, [rdi + FRAME_RDI]      ; 1
        add rax, [rdi + FRAME_RSI]      ; 2
        mov [rdi + FRAME_RAX], rax      ; 3
        mov rax, rdi                    ; 4
        ret                             ; 5

; sys_yield: suspend the current task, resume the other one if it is alive.
sys_yield:
        mov qword [rdi + FRAME_RAX], 0  ; 1
        mov rcx, [current]              ; 2
        lea rdx, [task_frame]           ; 3
        mov [rdx + rcx * 8], rdi        ; 4
        xor ecx, 1                      ; 5: the other task
        lea rax, [task_alive]           ; 6
        cmp byte [rax + rcx], 0         ; 7
        je .stay                        ; 8
.switch:                                ; (rcx = task, rdx = task_frame)
        mov [current], rcx              ; 9
        lea rax, [task_kstack]          ; 10
        mov rax, [rax + rcx * 8]        ; 11
        mov [tss + TSS_RSP0], rax       ; 12
        mov rax, [rdx + rcx * 8]        ; 13
        ret                             ; 14
.stay:
        mov rax, rdi
        ret

; sys_exit(value): record it; switch to the other task, or when both have
; exited, leave ring 3 (user_exit returns from bench_rep's user_resume).
sys_exit:
        mov rcx, [current]              ; 1
        mov rax, [rdi + FRAME_RDI]      ; 2
        lea rdx, [task_result]          ; 3
        mov [rdx + rcx * 8], rax        ; 4
        lea rax, [task_alive]           ; 5
        mov byte [rax + rcx], 0         ; 6
        xor ecx, 1                      ; 7
        cmp byte [rax + rcx], 0         ; 8
        je user_exit                    ; 9
        lea rdx, [task_frame]           ; 10
        jmp sys_yield.switch            ; 11, then .switch: 9-14, 6 more

        section .utext progbits alloc exec nowrite align=16
; sys_user(rdi = task index, rsi = n), ring 3.
measure_start:                          ; (same address: the measured part's first instruction)
sys_user:
        mov r12, rsi                    ; prologue 1: iterations left
        mov r13, rdi                    ; 2: accumulator starts at the task index
        test r12, r12                   ; 3
        jz .done                        ; 4
.loop:
        mov eax, SYS_ADD                ; 1
        mov rdi, r13                    ; 2
        mov rsi, r12                    ; 3
        int SYSCALL_VECTOR              ; 4: rax = r13 + r12
        mov r13, rax                    ; 5
        mov eax, SYS_YIELD              ; 6
        int SYSCALL_VECTOR              ; 7: the other task runs until it yields back
        dec r12                         ; 8
        jnz .loop                       ; 9
.done:
        mov rdi, r13                    ; epilogue 1
        mov eax, SYS_EXIT               ; 2
measure_end:
        int SYSCALL_VECTOR              ; 3: B's ends the measured part

; The demo's scheduler: two ring-3 tasks and a ring-0 idle loop.
;
; Every context (task or idle) is suspended as an interrupt frame
; (frame.inc) on its own stack; switching is returning another context's
; frame to lib/idt.asm's common exit, which pops it and `iretq`s.  A task's
; frame lives on its kernel stack, so TSS.RSP0 is set to the top of that
; stack whenever the task is chosen (SDM 3A §6.14.4: a ring-3 -> ring-0
; interrupt switches to TSS.RSP0).
;
; The IRQ0 handler is the scheduler tick: it counts the tick, wakes sleeping
; tasks and picks the next ready task round-robin, preempting a task that is
; still running.  With no ready task the idle loop runs (`sti; hlt`) and
; drains the kernel log to COM1.

%include "demo.inc"
%include "frame.inc"
%include "gdt.inc"
%include "x86.inc"
%include "pic.inc"

TASK_DEAD       equ 0           ; exited (or never started)
TASK_READY      equ 1           ; running or runnable
TASK_SLEEPING   equ 2           ; waiting for the next tick

        extern tss, user_task_entry, user_stacks, __user_start, __user_end
        extern klog_write
        global sched_init, sched_timer_irq, sched_syscall, sched_all_done
        global ticks, switches, syscalls, task_result

        section .bss nobits alloc write align=4096
kernel_stacks:  resb NTASKS * KSTACK_SIZE
task_frame:     resq NTASKS + 1     ; suspended frame of each task, and of idle
task_kstack:    resq NTASKS         ; top of each task's kernel stack
task_result:    resq NTASKS         ; exit(value) of each task
current:        resq 1              ; index of the running context (IDLE = idle loop)
last_task:      resq 1              ; the task that ran last, for round-robin
ticks:          resq 1
switches:       resq 1
syscalls:       resq 1
task_state:     resb NTASKS

        section .rodata
syscall_table:                      ; indexed by rax
        dd sys_write
        dd sys_wait_tick
        dd sys_exit

        section .text
        bits 64
        default rel

; sched_init(rdi = slices per task, rsi = task A's spin factor): make both
; tasks ready to enter ring 3.  Each task starts with rdi = its index, rsi =
; its slices and rdx = the passes it throws away after each slice (spin - 1
; for task A, 0 for B).
sched_init:
        mov r9, rdi
        mov r10, rsi
        sub r10, 1                          ; spin - 1 passes, none for spin=0
        adc r10, 0
        mov qword [current], IDLE
        mov qword [last_task], NTASKS - 1   ; so task A runs first
        xor r8d, r8d
.task:
        mov rax, r8
        inc rax
        shl rax, 12                         ; (i + 1) * KSTACK_SIZE
        mov edx, kernel_stacks
        add rdx, rax
        lea rcx, [task_kstack]
        mov [rcx + r8 * 8], rdx
        sub rdx, FRAME_SIZE                 ; the first frame: an iretq into ring 3
        mov rdi, rdx
        xor eax, eax
        mov ecx, FRAME_SIZE / 8
        rep stosq
        mov [rdx + FRAME_RDI], r8
        mov [rdx + FRAME_RSI], r9
        mov [rdx + FRAME_RDX], r10
        xor r10d, r10d                      ; task B (and any later task) does not spin
        mov eax, user_task_entry
        mov [rdx + FRAME_RIP], rax
        mov qword [rdx + FRAME_CS], SEL_UCODE64
        mov qword [rdx + FRAME_RFLAGS], RFLAGS_IF | RFLAGS_FIXED
        mov rax, r8
        inc rax
        shl rax, 12                         ; (i + 1) * USTACK_SIZE
        mov ecx, user_stacks
        add rax, rcx
        mov [rdx + FRAME_RSP], rax
        mov qword [rdx + FRAME_SS], SEL_UDATA
        lea rcx, [task_frame]
        mov [rcx + r8 * 8], rdx
        lea rcx, [task_state]
        mov byte [rcx + r8], TASK_READY
        inc r8
        cmp r8, NTASKS
        jb .task
        ret

; sched_all_done -> rax = 1 when every task has exited.
sched_all_done:
        lea rcx, [task_state]
        xor eax, eax
        xor edx, edx
.check:
        cmp byte [rcx + rdx], TASK_DEAD
        jne .done
        inc edx
        cmp edx, NTASKS
        jb .check
        inc eax
.done:
        ret

; sched_timer_irq(rdi = frame) -> rax = frame to resume.  Vector 0x20.
sched_timer_irq:
        inc qword [ticks]
        mov al, OCW2_EOI
        out PIC1_CMD, al
        lea rcx, [task_state]
        xor edx, edx
.wake:
        cmp byte [rcx + rdx], TASK_SLEEPING
        jne .next
        mov byte [rcx + rdx], TASK_READY
.next:
        inc edx
        cmp edx, NTASKS
        jb .wake
        ; fall through: preempt whoever was running

; schedule(rdi = frame of the current context) -> rax = frame to resume.
; Round-robin over the ready tasks, starting after the last one run.
schedule:
        mov rax, [current]
        lea rcx, [task_frame]
        mov [rcx + rax * 8], rdi
        mov rax, [last_task]
        lea rcx, [task_state]
        mov edx, NTASKS
.find:
        inc rax
        cmp rax, NTASKS
        jb .in_range
        xor eax, eax
.in_range:
        cmp byte [rcx + rax], TASK_READY
        je .found
        dec edx
        jnz .find
        mov eax, IDLE
        jmp .chosen
.found:
        mov [last_task], rax
        lea rcx, [task_kstack]
        mov rdx, [rcx + rax * 8]
        mov ecx, tss
        mov [rcx + TSS_RSP0], rdx
.chosen:
        cmp rax, [current]
        je .same
        inc qword [switches]
        mov [current], rax
.same:
        lea rcx, [task_frame]
        mov rax, [rcx + rax * 8]
        ret

; sched_syscall(rdi = frame) -> rax = frame to resume.  Vector 0x80.
sched_syscall:
        inc qword [syscalls]
        mov rax, [rdi + FRAME_RAX]
        cmp rax, SYS_COUNT
        jae .enosys
        lea rcx, [syscall_table]
        mov eax, [rcx + rax * 4]
        jmp rax
.enosys:
        mov qword [rdi + FRAME_RAX], -ENOSYS
        mov rax, rdi
        ret

; write(buffer, length): append to the kernel log; the buffer must lie in
; the user pages.
sys_write:
        push rbx
        mov rbx, rdi
        mov rdi, [rbx + FRAME_RDI]
        mov rsi, [rbx + FRAME_RSI]
        cmp rsi, WRITE_MAX
        ja .fault
        mov eax, __user_start
        cmp rdi, rax
        jb .fault
        mov eax, __user_end
        cmp rdi, rax
        ja .fault
        sub rax, rdi
        cmp rsi, rax
        ja .fault
        mov [rbx + FRAME_RAX], rsi
        call klog_write
        jmp .done
.fault:
        mov qword [rbx + FRAME_RAX], -EFAULT
.done:
        mov rax, rbx
        pop rbx
        ret

; wait_tick(): sleep until the timer wakes us, run someone else meanwhile.
sys_wait_tick:
        mov qword [rdi + FRAME_RAX], 0
        mov rax, [current]
        lea rcx, [task_state]
        mov byte [rcx + rax], TASK_SLEEPING
        jmp schedule

; exit(value): record the result; this task never runs again.
sys_exit:
        mov rax, [current]
        mov rdx, [rdi + FRAME_RDI]
        lea rcx, [task_result]
        mov [rcx + rax * 8], rdx
        lea rcx, [task_state]
        mov byte [rcx + rax], TASK_DEAD
        jmp schedule

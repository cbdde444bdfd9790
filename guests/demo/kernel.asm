; demo: a tiny 64-bit multiboot kernel showing what an OS asks of a PC.
;
; lib/boot32.asm gets us from the multiboot entry into long mode and calls
; kmain.  kmain reads the command line, installs the TSS and IDT, remaps
; the PIC, starts the PIT at 100 Hz, creates two ring-3 tasks and becomes
; the idle loop.  When both tasks have exited it masks IRQ0, flushes the
; kernel log, prints one summary line and exits through port 0xF4.

%include "demo.inc"
%include "x86.inc"
%include "pic.inc"
%include "pit.inc"
%include "idt.inc"
%include "debugexit.inc"

IRQ_TIMER       equ 0           ; the PIT drives IRQ0

        extern boot_stack_top, tss_install, idt_install, isr_handlers, isr_ud_int80
        extern pic_remap, pic_mask, pic_unmask, pit_start
        extern uart_puts, uart_putc, uart_write, uart_put_dec, uart_put_hex64
        extern cmdline_get_uint, cmdline_has_word
        extern klog_getc, klog_read, klog_flush
        extern pv_detect, pv_timer_start, uart_pv
        extern sched_init, sched_timer_irq, sched_syscall, sched_all_done
        extern ticks, switches, syscalls, task_result, page_faults, demo_page_fault
        global kmain, guest_name, work_slices, spin_factor, pv_mode

PV_TICK_NS      equ 10000000    ; the PV timer's period: 10 ms, as the PIT's 100 Hz
PV_TIMER_PERIODIC equ 1
IDLE_CHUNK      equ 256         ; bytes of kernel log the PV idle loop prints per call

        section .rodata
guest_name:     db "demo", 0
key_work:       db "work=", 0
key_spin:       db "spin=", 0
word_pv:        db "pv", 0
msg_multiboot:  db "demo: multiboot magic ok", 13, 10, 0
msg_cmdline:    db "demo: cmdline work=", 0
msg_long_mode:  db "demo: long mode ok (4-level paging)", 13, 10, 0
msg_tables:     db "demo: gdt, tss and idt loaded", 13, 10, 0
msg_pic:        db "demo: pic remapped to 0x20/0x28", 13, 10, 0
msg_pit:        db "demo: pit 100 Hz", 13, 10, 0
msg_pv_timer:   db "demo: pv timer 100 Hz", 13, 10, 0
msg_tasks:      db "demo: starting 2 ring-3 tasks", 13, 10, 0
msg_no_lma:     db "demo: long mode not active", 13, 10, 0
msg_ticks:      db "demo: ticks=", 0
msg_switches:   db " switches=", 0
msg_syscalls:   db " syscalls=", 0
msg_faults:     db " page_faults=", 0
msg_checksum:   db " checksum=", 0
msg_eol:        db 13, 10, 0

        section .bss nobits alloc write align=4096
df_stack:       resb DF_STACK_SIZE
df_stack_top:
work_slices:    resq 1
spin_factor:    resq 1          ; `spin=N`: task A runs each slice N times (N - 1 thrown away)
pv_mode:        resq 1          ; `pv` on the command line and pyvmm found: PV timer + console
idle_buf:       resb IDLE_CHUNK

        section .text
        bits 64
        default rel

; puts_rel: print a NUL-terminated string literal on COM1.
%macro SAY 1
        lea rdi, [%1]
        call uart_puts
%endmacro

kmain:
        lea rdi, [word_pv]              ; `pv` and pyvmm's hypervisor leaf: para-virtual
        call cmdline_has_word           ; devices; elsewhere (QEMU) the PIT and UART
        test rax, rax
        jz .emulated
        call pv_detect
        test rax, rax
        setnz al
        movzx eax, al
        mov [pv_mode], rax
        mov [uart_pv], rax
.emulated:
        SAY msg_multiboot

        lea rdi, [key_work]
        mov esi, WORK_DEFAULT
        mov edx, WORK_MAX
        call cmdline_get_uint
        mov [work_slices], rax
        SAY msg_cmdline
        mov rdi, [work_slices]
        call uart_put_dec
        SAY msg_eol
        lea rdi, [key_spin]             ; not printed: the output stays that of work=N
        mov esi, SPIN_DEFAULT
        mov edx, SPIN_MAX
        call cmdline_get_uint
        mov [spin_factor], rax

        mov ecx, MSR_EFER
        rdmsr
        test eax, EFER_LMA
        jz .no_long_mode
        SAY msg_long_mode

        mov edi, boot_stack_top         ; RSP0 until a task runs
        mov esi, df_stack_top
        call tss_install
        call idt_install
        lea rax, [isr_ud_int80]
        mov [isr_handlers + VEC_UD * 8], rax
        lea rax, [demo_page_fault]
        mov [isr_handlers + VEC_PF * 8], rax
        lea rax, [sched_timer_irq]
        mov [isr_handlers + (PIC_IRQ_BASE + IRQ_TIMER) * 8], rax
        lea rax, [sched_syscall]
        mov [isr_handlers + SYSCALL_VECTOR * 8], rax
        SAY msg_tables

        call pic_remap
        mov edi, PIC_CASCADE_IRQ
        call pic_unmask
        SAY msg_pic
        cmp qword [pv_mode], 0
        jne .pv_timer
        mov edi, PIT_DIVISOR_100HZ
        call pit_start
        SAY msg_pit
        jmp .timer_started
.pv_timer:
        mov edi, PV_TICK_NS             ; one hypercall instead of three PIT writes
        mov esi, PV_TIMER_PERIODIC
        call pv_timer_start
        SAY msg_pv_timer
.timer_started:

        mov rdi, [work_slices]
        mov rsi, [spin_factor]
        call sched_init
        SAY msg_tasks
        mov edi, IRQ_TIMER
        call pic_unmask
        jmp idle                        ; from now on only the timer runs the tasks

.no_long_mode:
        SAY msg_no_lma
        DEBUG_EXIT EXIT_FAILURE_VALUE

; idle: ring 0, interrupts on.  Drains the kernel log one byte at a time,
; otherwise halts until the next interrupt.  The check is done with
; interrupts off and `sti; hlt` cannot lose a wake-up: STI delays interrupt
; recognition by one instruction (SDM 2B "STI").
idle:
        cli
        call sched_all_done
        test eax, eax
        jnz .finish
        cmp qword [pv_mode], 0
        jne .pv_drain
        call klog_getc
        test rax, rax
        js .sleep
        sti
        mov edi, eax
        call uart_putc
        jmp idle
.sleep:
        sti
        hlt
        jmp idle
.pv_drain:                              ; PV console: the whole log in one hypercall
        lea rdi, [idle_buf]
        mov esi, IDLE_CHUNK
        call klog_read
        test rax, rax
        jz .sleep
        sti
        lea rdi, [idle_buf]
        mov rsi, rax
        call uart_write
        jmp idle

.finish:
        mov edi, IRQ_TIMER
        call pic_mask
        call klog_flush
        SAY msg_ticks
        mov rdi, [ticks]
        call uart_put_dec
        SAY msg_switches
        mov rdi, [switches]
        call uart_put_dec
        SAY msg_syscalls
        mov rdi, [syscalls]
        call uart_put_dec
        SAY msg_faults
        mov rdi, [page_faults]
        call uart_put_dec
        SAY msg_checksum
        mov rax, [task_result]
        mov rcx, CHECKSUM_MIX
        imul rax, rcx
        add rax, [task_result + 8]
        mov rdi, rax
        call uart_put_hex64
        SAY msg_eol
        DEBUG_EXIT EXIT_SUCCESS_VALUE

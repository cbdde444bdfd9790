; The demo's page-fault handler: demand-zero pages in one window.
;
; A not-present fault (error code bit 0 clear, SDM 3A §4.7) whose linear
; address (CR2) lies in lib/paging.inc's window gets a fresh zeroed page
; mapped user/writable, and the faulting instruction is restarted by the
; `iretq` (a #PF is a fault: the saved RIP points at the faulting
; instruction, SDM 3A §6.5).  Any other page fault is fatal.

%include "demo.inc"
%include "frame.inc"
%include "x86.inc"
%include "paging.inc"

        extern paging_map_window_page, isr_fatal, klog_puts, klog_put_hex64
        global demo_page_fault, page_faults

        section .bss nobits alloc write align=4096
demand_pool:    resb DEMAND_POOL_PAGES * PAGE_SIZE
page_faults:    resq 1

        section .rodata
msg_fault:      db "demo: page fault at ", 0
msg_mapped:     db ", mapped a demand-zero page", 13, 10, 0

        section .text
        bits 64
        default rel

; demo_page_fault(rdi = frame) -> rax = the same frame (restart the access).
demo_page_fault:
        push rbx
        push r12
        push r13
        mov rbx, rdi
        mov r12, cr2
        test qword [rbx + FRAME_ERROR], PF_PRESENT
        jnz .fatal                      ; a protection violation, not a missing page
        mov rax, r12
        sub rax, WINDOW_BASE
        cmp rax, WINDOW_SIZE
        jae .fatal                      ; outside the window (unsigned: below it too)
        mov rax, [page_faults]
        cmp rax, DEMAND_POOL_PAGES
        jae .fatal                      ; pool exhausted
        shl rax, PAGE_SHIFT
        mov r13d, demand_pool
        add r13, rax
        mov rdi, r13
        xor eax, eax
        mov ecx, PAGE_SIZE / 8
        rep stosq
        mov rdi, r12
        mov rsi, r13
        call paging_map_window_page
        inc qword [page_faults]
        lea rdi, [msg_fault]
        call klog_puts
        mov rdi, r12
        call klog_put_hex64
        lea rdi, [msg_mapped]
        call klog_puts
        mov rax, rbx
        pop r13
        pop r12
        pop rbx
        ret
.fatal:
        mov rdi, rbx
        jmp isr_fatal

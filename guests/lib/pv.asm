; Para-virtual drivers: detect pyvmm, then use its hypercalls instead of
; trapping device accesses (docs/PARAVIRT.md).  Buffers are passed by
; guest-physical address: the kernels' memory below 2 MiB is identity-mapped,
; so their addresses there are physical addresses too.

%include "pv.inc"

        global pv_detect, pv_vm_id, pv_console_write, pv_timer_start, pv_clock
        global pv_net_send, pv_net_recv, pv_net_wait

        section .bss nobits alloc write align=8
pv_vm_id:       resq 1          ; this VM's id on the virtual switch (HC_PROBE)

        section .text
        bits 64
        default rel

; pv_detect -> rax = HC_PROBE's feature bits (nonzero) when running on pyvmm,
; else 0.  CPUID leaf 1 ECX bit 31 says "a hypervisor", leaf 0x40000000 which
; one (SDM Vol. 2A CPUID; on bare metal the leaf returns other data).
pv_detect:
        push rbx
        mov eax, 1
        cpuid
        bt ecx, 31
        jnc .no
        mov eax, PV_CPUID_LEAF
        cpuid
        cmp ebx, PV_SIG_EBX
        jne .no
        cmp ecx, PV_SIG_ECX
        jne .no
        cmp edx, PV_SIG_EDX
        jne .no
        PV_CALL HC_PROBE
        cmp rax, PV_ABI_VERSION
        jne .no
        mov [pv_vm_id], rbx
        mov rax, rcx
        pop rbx
        ret
.no:
        xor eax, eax
        pop rbx
        ret

; pv_console_write(rdi = buffer, rsi = length) -> rax = length or -errno
pv_console_write:
        push rbx
        mov rbx, rdi
        mov rcx, rsi
        PV_CALL HC_CONSOLE_WRITE
        pop rbx
        ret

; pv_timer_start(rdi = period ns, rsi = flags) -> rax = 0 or -errno
pv_timer_start:
        push rbx
        mov rbx, rdi
        mov rcx, rsi
        PV_CALL HC_TIMER_START
        pop rbx
        ret

; pv_clock -> rax = guest time in ns
pv_clock:
        push rbx
        PV_CALL HC_CLOCK
        pop rbx
        ret

; pv_net_send(rdi = destination VM, rsi = buffer, rdx = length) -> rax = 0 or -errno
pv_net_send:
        push rbx
        push rsi
        mov rbx, rdi
        mov rcx, rsi
        mov rsi, rdx
        PV_CALL HC_NET_SEND
        pop rsi
        pop rbx
        ret

; pv_net_recv(rdi = buffer, rsi = capacity) -> rax = length or -errno, rdx = source VM
pv_net_recv:
        push rbx
        mov rbx, rdi
        mov rcx, rsi
        PV_CALL HC_NET_RECV
        mov rdx, rbx
        pop rbx
        ret

; pv_net_wait(rdi = timeout ns, 0 = none) -> rax = datagrams queued, or
; -EAGAIN: IRQ PV_IRQ_EVENT will fire once when one arrives or time runs out.
pv_net_wait:
        push rbx
        mov rbx, rdi
        PV_CALL HC_NET_WAIT
        pop rbx
        ret

; ping: two VMs exchange datagrams through pyvmm's virtual switch and each
; checks every payload it receives (docs/PARAVIRT.md, guests/README.md).
;
; Lock-step: for seq = 0 .. count-1, send datagram `seq` to the peer, then
; wait for the peer's datagram `seq` and check its source VM, length and
; every byte.  At most one datagram is in flight each way, so the switch's
; bounded queues never overflow.  The VM waits with HC_NET_WAIT (which arms
; IRQ 5) and `sti; hlt`, so a waiting VM costs the host nothing.
;
; Command line: count=N (datagrams each way, default 16, at most 100000),
; peer=N (the other VM's id; default: 2 for VM 1, 1 for any other VM).

%include "x86.inc"
%include "pic.inc"
%include "pv.inc"
%include "debugexit.inc"

COUNT_DEFAULT   equ 16
COUNT_MAX       equ 100000
PEER_MAX        equ 0xFFFF
PAYLOAD_MIN     equ 16              ; header (9 bytes) and a few pattern bytes
PAYLOAD_SPREAD  equ 200             ; lengths vary from PAYLOAD_MIN to +199
BUF_SIZE        equ 1536            ; >= the switch's 1500-byte limit
RETRY_WAIT_NS   equ 1000000         ; back-off when the peer is not there yet
RETRY_MAX       equ 100000
HDR_MAGIC       equ 0x474E4950      ; "PING"
DF_STACK_SIZE   equ 4096

        extern boot_stack_top, tss_install, idt_install, pic_remap, pic_unmask
        extern uart_puts, uart_put_dec, uart_pv, cmdline_get_uint
        extern pv_detect, pv_vm_id, pv_net_send, pv_net_recv, pv_net_wait
        global kmain, guest_name

        section .rodata
guest_name:     db "ping", 0
key_count:      db "count=", 0
key_peer:       db "peer=", 0
msg_no_pv:      db "ping: needs pyvmm's hypercalls and a virtual switch", 13, 10, 0
msg_vm:         db "ping: vm ", 0
msg_peer:       db ", peer vm ", 0
msg_count:      db ", ", 0
msg_datagrams:  db " datagrams each way", 13, 10, 0
msg_sent:       db "ping: sent ", 0
msg_received:   db ", received ", 0
msg_ok:         db ", all payloads ok", 13, 10, 0
msg_bad:        db "ping: bad datagram ", 0
msg_send_err:   db "ping: send failed, error ", 0
msg_recv_err:   db "ping: receive failed, error ", 0
msg_eol:        db 13, 10, 0

        section .bss nobits alloc write align=4096
df_stack:       resb DF_STACK_SIZE
df_stack_top:
tx_buf:         resb BUF_SIZE
rx_buf:         resb BUF_SIZE
want_buf:       resb BUF_SIZE
count:          resq 1
peer:           resq 1
seq:            resq 1
received:       resq 1

        section .text
        bits 64
        default rel

%macro SAY 1
        lea rdi, [%1]
        call uart_puts
%endmacro

kmain:
        call pv_detect
        test eax, PV_FEATURE_NET
        jz .no_pv
        mov qword [uart_pv], 1          ; console through the hypercall too

        lea rdi, [key_count]
        mov esi, COUNT_DEFAULT
        mov edx, COUNT_MAX
        call cmdline_get_uint
        mov [count], rax
        mov esi, 2                      ; default peer: 2 for VM 1, else 1
        cmp qword [pv_vm_id], 1
        je .peer_default
        mov esi, 1
.peer_default:
        lea rdi, [key_peer]
        mov edx, PEER_MAX
        call cmdline_get_uint
        mov [peer], rax

        SAY msg_vm
        mov rdi, [pv_vm_id]
        call uart_put_dec
        SAY msg_peer
        mov rdi, [peer]
        call uart_put_dec
        SAY msg_count
        mov rdi, [count]
        call uart_put_dec
        SAY msg_datagrams

        mov edi, boot_stack_top
        mov esi, df_stack_top
        call tss_install
        call idt_install                ; PIC IRQs: acknowledged by isr_default
        call pic_remap
        mov edi, PV_IRQ_EVENT
        call pic_unmask

.exchange:
        mov rax, [seq]
        cmp rax, [count]
        jae .done
        ; send ours
        lea rdi, [tx_buf]
        mov rsi, [pv_vm_id]
        mov rdx, [seq]
        call make_payload
        mov rdx, rax
        call send_retrying
        ; take theirs
        call recv_waiting               ; rax = length, rdx = source
        mov rbx, rax
        cmp rdx, [peer]
        jne .bad
        lea rdi, [want_buf]
        mov rsi, [peer]
        mov rdx, [seq]
        call make_payload
        cmp rax, rbx
        jne .bad
        mov rcx, rax
        lea rsi, [rx_buf]
        lea rdi, [want_buf]
        repe cmpsb
        jne .bad
        inc qword [received]
        inc qword [seq]
        jmp .exchange

.done:
        SAY msg_sent
        mov rdi, [seq]
        call uart_put_dec
        SAY msg_received
        mov rdi, [received]
        call uart_put_dec
        SAY msg_ok
        DEBUG_EXIT EXIT_SUCCESS_VALUE

.bad:
        SAY msg_bad
        mov rdi, [seq]
        call uart_put_dec
        SAY msg_eol
        DEBUG_EXIT EXIT_FAILURE_VALUE

.no_pv:
        SAY msg_no_pv
        DEBUG_EXIT EXIT_FAILURE_VALUE

; make_payload(rdi = buffer, rsi = source VM, rdx = seq) -> rax = length.
; "PING", source (1 byte), seq (4 bytes), then byte i = source*31 + seq*7 + i.
make_payload:
        mov dword [rdi], HDR_MAGIC
        mov [rdi + 4], sil
        mov [rdi + 5], edx
        imul eax, edx, 37               ; length = PAYLOAD_MIN + seq*37 mod SPREAD
        mov ecx, edx
        xor edx, edx
        mov r9d, PAYLOAD_SPREAD
        div r9d
        lea r10, [rdx + PAYLOAD_MIN]    ; r10 = length
        imul eax, esi, 31
        imul ecx, ecx, 7
        add eax, ecx                    ; al = pattern start
        mov ecx, 9
.fill:
        cmp rcx, r10
        jae .filled
        lea edx, [eax + ecx]
        mov [rdi + rcx], dl
        inc ecx
        jmp .fill
.filled:
        mov rax, r10
        ret

; send_retrying(rdx = length of tx_buf): retries while the peer is not on the
; switch yet or its queue is full, waiting RETRY_WAIT_NS between tries.
send_retrying:
        push rbx
        push rbp
        mov rbp, rdx
        xor ebx, ebx
.try:
        mov rdi, [peer]
        lea rsi, [tx_buf]
        mov rdx, rbp
        call pv_net_send
        test rax, rax
        jz .sent
        cmp rax, -PV_EHOSTUNREACH
        je .later
        cmp rax, -PV_ENOBUFS
        jne .fail
.later:
        inc ebx
        cmp ebx, RETRY_MAX
        jae .fail
        mov edi, RETRY_WAIT_NS
        call wait_event
        jmp .try
.sent:
        pop rbp
        pop rbx
        ret
.fail:
        mov rbx, rax
        SAY msg_send_err
        mov rdi, rbx
        neg rdi
        call uart_put_dec
        SAY msg_eol
        DEBUG_EXIT EXIT_FAILURE_VALUE

; recv_waiting -> rax = length in rx_buf, rdx = source VM.  Sleeps until one arrives.
recv_waiting:
        push rbx
.try:
        lea rdi, [rx_buf]
        mov esi, BUF_SIZE
        call pv_net_recv
        test rax, rax
        jns .got
        cmp rax, -PV_EAGAIN
        jne .fail
        xor edi, edi                    ; no deadline: the host's run timeout guards us
        call wait_event
        jmp .try
.got:
        pop rbx
        ret
.fail:
        mov rbx, rax
        SAY msg_recv_err
        mov rdi, rbx
        neg rdi
        call uart_put_dec
        SAY msg_eol
        DEBUG_EXIT EXIT_FAILURE_VALUE

; wait_event(rdi = timeout ns, 0 = none): return when a datagram is queued,
; or after IRQ 5 (arrival or timeout).  The check runs with interrupts off
; and `sti; hlt` cannot lose the wake-up (STI's one-instruction shadow, SDM 2B "STI").
wait_event:
        cli
        call pv_net_wait
        test rax, rax
        jns .ready                      ; already queued
        sti
        hlt
        ret
.ready:
        sti
        ret

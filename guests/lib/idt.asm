; The IDT, its entry stubs and the common interrupt path (SDM 3A §6.10-6.14).
;
; Installed: exceptions 0-31, PIC vectors 0x20-0x2F and the system-call
; vector 0x80 (DPL 3, so `int 0x80` is allowed from ring 3).  All are
; interrupt gates (IF cleared on entry), so handlers never nest.  #DF runs on
; IST1, a known-good stack even if RSP is corrupt.
;
; Every stub pushes an error code (0 when the CPU pushes none), then the
; vector, then jumps to `isr_common`, which saves all GPRs (frame.inc) and
; calls isr_handlers[vector](rdi = frame).  The handler returns in rax the
; frame to resume, which may belong to another task: the common exit loads
; rsp from it, pops the GPRs and `iretq`s.  A zero handler entry means the
; default: exceptions are fatal, PIC IRQs are acknowledged and ignored.

%include "x86.inc"
%include "gdt.inc"
%include "pic.inc"
%include "frame.inc"
%include "debugexit.inc"
%include "idt.inc"

NUM_STUBS       equ PIC_IRQ_BASE + 16
IDT_ENTRIES     equ 256
IDT_ENTRY_SIZE  equ 16          ; a 64-bit gate descriptor (SDM 3A Figure 6-8)
GATE_INTERRUPT  equ 0x8E        ; present, DPL 0, type 0xE (64-bit interrupt gate)
GATE_DPL_SHIFT  equ 5
DF_IST          equ 1           ; #DF uses IST1

; Vectors for which the CPU pushes an error code (SDM 3A Table 6-1).
%define HAS_ERROR(v) ((v) == 8 || (v) == 10 || (v) == 11 || (v) == 12 || (v) == 13 || \
                      (v) == 14 || (v) == 17 || (v) == 21 || (v) == 29 || (v) == 30)

        extern __user_start, __user_end
        extern guest_name, uart_puts, uart_put_dec, uart_put_hex64, pic_eoi, pic_in_service
        global idt_install, isr_handlers, isr_fatal, isr_ud_int80, int80_via_ud

        section .bss nobits alloc write align=16
idt:            resb IDT_ENTRIES * IDT_ENTRY_SIZE
isr_handlers:   resq IDT_ENTRIES    ; handler(rdi = frame) -> rax = frame to resume
int80_via_ud:   resq 1              ; system calls that arrived as #UD (see isr_ud_int80)

        section .data
idt_ptr:
        dw IDT_ENTRIES * IDT_ENTRY_SIZE - 1
        dd idt, 0

msg_exception:  db ": exception ", 0
msg_interrupt:  db ": unexpected interrupt ", 0
msg_at:         db " at ", 0
msg_error:      db " error=", 0
msg_cr2:        db " cr2=", 0
msg_eol:        db 13, 10, 0

        section .text
        bits 64
        default rel

%macro ISR_STUB 1
isr_stub_%1:
%if HAS_ERROR(%1) == 0
        push 0
%endif
        push %1
        jmp isr_common
%endmacro

%assign v 0
%rep NUM_STUBS
        ISR_STUB v
%assign v v + 1
%endrep
        ISR_STUB SYSCALL_VECTOR

isr_stub_table:
%assign v 0
%rep NUM_STUBS
        dd isr_stub_%[v]
%assign v v + 1
%endrep

isr_common:
        FRAME_PUSH_GPRS
        cld
        mov rdi, rsp
        mov rax, [rsp + FRAME_VECTOR]
        mov rax, [isr_handlers + rax * 8]
        test rax, rax
        jnz .call
        lea rax, [isr_default]
.call:
        call rax
        mov rsp, rax                    ; the frame to resume (maybe another task's)
        FRAME_POP_GPRS
        add rsp, 16                     ; vector and error code
        iretq

; idt_set_gate(rdi = vector, rsi = handler, edx = IST, ecx = DPL)
idt_set_gate:
        shl rdi, 4
        mov eax, idt
        add rdi, rax
        mov [rdi], si                   ; offset 15:0
        mov word [rdi + 2], SEL_KCODE64
        mov [rdi + 4], dl               ; IST index
        shl cl, GATE_DPL_SHIFT
        or cl, GATE_INTERRUPT
        mov [rdi + 5], cl
        mov rax, rsi
        shr rax, 16
        mov [rdi + 6], ax               ; offset 31:16
        shr rax, 16
        mov [rdi + 8], eax              ; offset 63:32
        mov dword [rdi + 12], 0
        ret

; idt_install: fill the gates and load IDTR.  Needs the TSS (IST1) loaded.
idt_install:
        push rbx
        xor ebx, ebx
.gate:
        mov edi, ebx
        mov esi, [isr_stub_table + rbx * 4]
        xor edx, edx
        cmp ebx, VEC_DF
        jne .ist_done
        mov edx, DF_IST
.ist_done:
        xor ecx, ecx
        call idt_set_gate
        inc ebx
        cmp ebx, NUM_STUBS
        jb .gate
        mov edi, SYSCALL_VECTOR
        lea rsi, [isr_stub_%[SYSCALL_VECTOR]]
        xor edx, edx
        mov ecx, 3
        call idt_set_gate
        lidt [idt_ptr]
        pop rbx
        ret

; isr_default(rdi = frame): PIC IRQs are acknowledged (spurious IRQ7/15,
; whose ISR bit is clear, get no EOI from their own PIC: 8259A datasheet,
; "Spurious interrupts"); anything else is fatal.
isr_default:
        push rbx
        mov rbx, rdi
        mov rdi, [rbx + FRAME_VECTOR]
        sub rdi, PIC_IRQ_BASE
        cmp rdi, 16
        jae .fatal
        cmp edi, PIC_SPURIOUS_MASTER
        je .maybe_spurious
        cmp edi, PIC_SPURIOUS_SLAVE
        jne .eoi
.maybe_spurious:
        push rdi
        call pic_in_service
        pop rdi
        test eax, eax
        jnz .eoi
        cmp edi, PIC_SPURIOUS_SLAVE     ; a spurious slave IRQ is real to the master
        jne .done
        mov edi, PIC_CASCADE_IRQ
.eoi:
        call pic_eoi
.done:
        mov rax, rbx
        pop rbx
        ret
.fatal:
        mov rdi, rbx
        ; fall through

; isr_ud_int80(rdi = frame): a #UD handler that completes `int 0x80`.
; Some hypervisors deliver #UD instead of the software interrupt when ring-3
; code executes `int n` (seen on pyvmm's nested, software-assisted KVM host).
; #UD is a fault, so RIP points at the instruction (SDM 3A §6.15, vector 6):
; if it is CD 80 in a user page, executed at CPL 3, finish what the CPU
; should have done (RIP past the instruction, vector 0x80) and call the
; system-call handler.  The task sees exactly what a real `int 0x80` does.
; Any other #UD is fatal.
INT_OPCODE      equ 0xCD            ; INT imm8 (SDM 2A "INT n")

isr_ud_int80:
        test qword [rdi + FRAME_CS], 3
        jz isr_fatal
        mov rax, [rdi + FRAME_RIP]
        mov ecx, __user_start
        cmp rax, rcx
        jb isr_fatal
        mov ecx, __user_end - 2
        cmp rax, rcx
        ja isr_fatal
        cmp word [rax], INT_OPCODE | (SYSCALL_VECTOR << 8)
        jne isr_fatal
        add qword [rdi + FRAME_RIP], 2
        mov qword [rdi + FRAME_VECTOR], SYSCALL_VECTOR
        inc qword [int80_via_ud]
        mov rax, [isr_handlers + SYSCALL_VECTOR * 8]
        test rax, rax
        jz isr_fatal
        jmp rax

; isr_fatal(rdi = frame): report "<guest>: exception N at RIP ..." on COM1
; and exit with failure.  Never returns.
isr_fatal:
        mov rbx, rdi
        lea rdi, [guest_name]
        call uart_puts
        lea rdi, [msg_exception]
        cmp qword [rbx + FRAME_VECTOR], NUM_EXCEPTIONS
        jb .kind
        lea rdi, [msg_interrupt]
.kind:
        call uart_puts
        mov rdi, [rbx + FRAME_VECTOR]
        call uart_put_dec
        lea rdi, [msg_at]
        call uart_puts
        mov rdi, [rbx + FRAME_RIP]
        call uart_put_hex64
        lea rdi, [msg_error]
        call uart_puts
        mov rdi, [rbx + FRAME_ERROR]
        call uart_put_hex64
        cmp qword [rbx + FRAME_VECTOR], VEC_PF
        jne .eol
        lea rdi, [msg_cr2]
        call uart_puts
        mov rdi, cr2
        call uart_put_hex64
.eol:
        lea rdi, [msg_eol]
        call uart_puts
        DEBUG_EXIT EXIT_FAILURE_VALUE

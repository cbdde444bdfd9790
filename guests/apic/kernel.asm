; apic: the local APIC and the I/O APIC of the PC (SDM Vol. 3A ch. "Advanced
; Programmable Interrupt Controller"; 82093AA datasheet), one summary line.
;
; Every count is deterministic by construction: each phase waits with
; `sti; hlt` until its handler has seen exactly N interrupts, and the handler
; itself switches its source off at the N-th (and does not count a tick that
; was already pending then), so no wall-clock timing enters the output.  Phases:
;   1. LAPIC timer, periodic (divide by 1, initial count TIMER_COUNT): N ticks;
;   2. LAPIC timer, TSC-deadline mode (IA32_TSC_DEADLINE, MSR 0x6E0): N
;      one-shots, each armed DEADLINE_NS ahead of RDTSC; the MSR reads 0 after
;      each expiry;
;   3. the PIT (ISA IRQ 0) through the I/O APIC: pin 2 by the PC's interrupt
;      source override, and pin 0 programmed too, which must stay silent;
;   4. COM1's THR-empty interrupt (ISA IRQ 4) through I/O APIC pin 4: each
;      handler re-arms it by toggling IER.ETBEI (16550 datasheet);
;   5. one self-IPI through the ICR (shorthand "self").
; Then the line, e.g. "apic: periodic=8 tsc-deadline=8 pit-gsi2=8 gsi0=0
; com1=8 self-ipi=1 spurious=0 ok", and the debug exit (status 33; 35 when a
; count is off).  The i8259 pair is remapped and fully masked; LINT0 masked.

%include "x86.inc"
%include "pic.inc"
%include "pit.inc"
%include "uart.inc"
%include "paging.inc"
%include "debugexit.inc"

N               equ 8               ; interrupts per phase
TIMER_COUNT     equ 100000          ; LAPIC periodic: 100 us at the 1 GHz bus clock
DEADLINE_NS     equ 50000           ; TSC-deadline: 50 us ahead
PIT_DIVISOR     equ 1193            ; ~1 kHz

LAPIC_PHYS      equ 0xFEE00000
IOAPIC_PHYS     equ 0xFEC00000
LAPIC           equ WINDOW_BASE             ; mapped here (the paging window)
IOAPIC          equ WINDOW_BASE + PAGE_SIZE
LAPIC_EOI       equ 0xB0
LAPIC_SVR       equ 0xF0
LAPIC_ICR_LO    equ 0x300
LAPIC_LVT_TIMER equ 0x320
LAPIC_LVT_LINT0 equ 0x350
LAPIC_TIMER_ICR equ 0x380
LAPIC_TIMER_DCR equ 0x3E0
LVT_MASKED      equ 1 << 16
LVT_PERIODIC    equ 1 << 17
LVT_TSC_DEADLINE equ 2 << 17
SVR_ENABLE      equ 1 << 8
DCR_DIVIDE_1    equ 0xB
ICR_SELF        equ 1 << 18         ; destination shorthand 01: self
MSR_TSC_DEADLINE equ 0x6E0
IOREGSEL        equ 0x00
IOWIN           equ 0x10
IOAPIC_REDTBL   equ 0x10
RTE_MASKED      equ 1 << 16

VEC_PERIODIC    equ 0x20            ; the lib's IDT stubs cover vectors 0-0x2F
VEC_DEADLINE    equ 0x21
VEC_PIT         equ 0x22
VEC_GSI0        equ 0x23
VEC_COM1        equ 0x24
VEC_SELF        equ 0x25
VEC_SPURIOUS    equ 0x2F
GSI_PIT         equ 2               ; ISA IRQ 0 -> GSI 2 (interrupt source override)
GSI_COM1        equ 4
UART_IIR        equ 2
IER_ETBEI       equ 0x02
DF_STACK_SIZE   equ 4096

        extern boot_stack_top, tss_install, idt_install, isr_handlers, pic_remap
        extern paging_map_window_page, uart_puts, uart_put_dec
        global kmain, guest_name

        section .rodata
guest_name:     db "apic", 0
msg_head:       db "apic: periodic=", 0
msg_deadline:   db " tsc-deadline=", 0
msg_pit:        db " pit-gsi2=", 0
msg_gsi0:       db " gsi0=", 0
msg_com1:       db " com1=", 0
msg_self:       db " self-ipi=", 0
msg_spurious:   db " spurious=", 0
msg_ok:         db " ok", 13, 10, 0
msg_bad:        db " wrong", 13, 10, 0

        section .bss nobits alloc write align=4096
df_stack:       resb DF_STACK_SIZE
df_stack_top:
counts:                             ; one qword per phase, in message order
n_periodic:     resq 1
n_deadline:     resq 1
n_pit:          resq 1
n_gsi0:         resq 1
n_com1:         resq 1
n_self:         resq 1
n_spurious:     resq 1
deadline_left:  resq 1              ; IA32_TSC_DEADLINE read in the handler (0 expected)

        section .text
        bits 64
        default rel

%macro LAPIC_WRITE 2                ; register offset, value (clobbers eax)
        mov eax, %2
        mov [abs LAPIC + %1], eax
%endmacro

%macro SET_HANDLER 2                ; vector, handler
        lea rax, [%2]
        mov [isr_handlers + 8 * %1], rax
%endmacro

; WAIT_FOR counter, n: sti; hlt until [counter] reaches n.
%macro WAIT_FOR 2
%%wait:
        cmp qword [%1], %2
        jae %%done
        sti
        hlt
        cli
        jmp %%wait
%%done:
%endmacro

kmain:
        mov edi, boot_stack_top
        mov esi, df_stack_top
        call tss_install
        call idt_install
        call pic_remap                  ; vectors 0x20-0x2F, every IRQ masked
        mov edi, LAPIC
        mov esi, LAPIC_PHYS
        call paging_map_window_page
        mov edi, IOAPIC
        mov esi, IOAPIC_PHYS
        call paging_map_window_page
        SET_HANDLER VEC_PERIODIC, on_periodic
        SET_HANDLER VEC_DEADLINE, on_deadline
        SET_HANDLER VEC_PIT, on_pit
        SET_HANDLER VEC_GSI0, on_gsi0
        SET_HANDLER VEC_COM1, on_com1
        SET_HANDLER VEC_SELF, on_self
        SET_HANDLER VEC_SPURIOUS, on_spurious

        LAPIC_WRITE LAPIC_SVR, SVR_ENABLE | VEC_SPURIOUS
        LAPIC_WRITE LAPIC_LVT_LINT0, LVT_MASKED  ; no virtual wire: the APIC alone

        ; 1. periodic
        LAPIC_WRITE LAPIC_TIMER_DCR, DCR_DIVIDE_1
        LAPIC_WRITE LAPIC_LVT_TIMER, LVT_PERIODIC | VEC_PERIODIC
        LAPIC_WRITE LAPIC_TIMER_ICR, TIMER_COUNT
        WAIT_FOR n_periodic, N

        ; 2. TSC deadline
        LAPIC_WRITE LAPIC_LVT_TIMER, LVT_TSC_DEADLINE | VEC_DEADLINE
.deadline:
        mov rbx, [n_deadline]
        cmp rbx, N
        jae .deadline_done
        rdtsc
        shl rdx, 32
        or rax, rdx
        add rax, DEADLINE_NS
        mov rdx, rax
        shr rdx, 32
        mov ecx, MSR_TSC_DEADLINE
        wrmsr
.deadline_wait:
        cmp [n_deadline], rbx
        jne .deadline
        sti
        hlt
        cli
        jmp .deadline_wait
.deadline_done:
        LAPIC_WRITE LAPIC_LVT_TIMER, LVT_MASKED

        ; 3. the PIT through the I/O APIC: GSI 2 and (silent) GSI 0, edge, to APIC 0
        mov edi, GSI_PIT
        mov esi, VEC_PIT
        call ioapic_route
        mov edi, 0
        mov esi, VEC_GSI0
        call ioapic_route
        mov al, PIT_CH0_RATE
        out PIT_CMD, al
        mov al, PIT_DIVISOR & 0xFF
        out PIT_CH0, al
        mov al, PIT_DIVISOR >> 8
        out PIT_CH0, al
        WAIT_FOR n_pit, N
        mov edi, 0
        call ioapic_mask

        ; 4. COM1 THR empty through GSI 4
        mov edi, GSI_COM1
        mov esi, VEC_COM1
        call ioapic_route
        mov dx, COM1_BASE + UART_MCR
        mov al, MCR_DTR_RTS | 0x08      ; OUT2: the PC gates the UART's IRQ with it
        out dx, al
        mov dx, COM1_BASE + UART_IER
        mov al, IER_ETBEI               ; newly enabled with THR empty: interrupt
        out dx, al
        WAIT_FOR n_com1, N

        ; 5. self-IPI
        LAPIC_WRITE LAPIC_ICR_LO, ICR_SELF | VEC_SELF
        WAIT_FOR n_self, 1

        ; the summary line
        lea rdi, [msg_head]
        lea rsi, [n_periodic]
        call say_count
        lea rdi, [msg_deadline]
        lea rsi, [n_deadline]
        call say_count
        lea rdi, [msg_pit]
        lea rsi, [n_pit]
        call say_count
        lea rdi, [msg_gsi0]
        lea rsi, [n_gsi0]
        call say_count
        lea rdi, [msg_com1]
        lea rsi, [n_com1]
        call say_count
        lea rdi, [msg_self]
        lea rsi, [n_self]
        call say_count
        lea rdi, [msg_spurious]
        lea rsi, [n_spurious]
        call say_count
        mov eax, N
        cmp [n_periodic], rax
        jne .bad
        cmp [n_deadline], rax
        jne .bad
        cmp [n_pit], rax
        jne .bad
        cmp [n_com1], rax
        jne .bad
        cmp qword [n_gsi0], 0
        jne .bad
        cmp qword [n_self], 1
        jne .bad
        cmp qword [n_spurious], 0
        jne .bad
        cmp qword [deadline_left], 0
        jne .bad
        lea rdi, [msg_ok]
        call uart_puts
        DEBUG_EXIT EXIT_SUCCESS_VALUE
.bad:
        lea rdi, [msg_bad]
        call uart_puts
        DEBUG_EXIT EXIT_FAILURE_VALUE

; say_count(rdi = label, rsi = counter)
say_count:
        push rsi
        call uart_puts
        pop rsi
        mov rdi, [rsi]
        jmp uart_put_dec

; ioapic_route(edi = pin, esi = vector): edge, active high, fixed, physical APIC 0.
ioapic_route:
        lea eax, [IOAPIC_REDTBL + 2 * rdi + 1]
        mov [abs IOAPIC + IOREGSEL], eax
        mov dword [abs IOAPIC + IOWIN], 0   ; destination APIC ID 0
        dec eax
        mov [abs IOAPIC + IOREGSEL], eax
        mov [abs IOAPIC + IOWIN], esi
        ret

; ioapic_mask(edi = pin)
ioapic_mask:
        lea eax, [IOAPIC_REDTBL + 2 * rdi]
        mov [abs IOAPIC + IOREGSEL], eax
        mov dword [abs IOAPIC + IOWIN], RTE_MASKED
        ret

; Handlers: rdi = frame -> rax = frame (lib/idt.asm); each ends with an EOI.
eoi_return:
        LAPIC_WRITE LAPIC_EOI, 0
        mov rax, rdi
        ret

; A tick the APIC latched in IRR before the N-th handler stopped its source (the
; SDM's LVT mask stops new ones, not one already pending) is late: not counted.
on_periodic:
        cmp qword [n_periodic], N
        jae eoi_return
        inc qword [n_periodic]
        cmp qword [n_periodic], N
        jb eoi_return
        LAPIC_WRITE LAPIC_LVT_TIMER, LVT_MASKED | LVT_PERIODIC | VEC_PERIODIC
        LAPIC_WRITE LAPIC_TIMER_ICR, 0  ; stops the count
        jmp eoi_return

on_deadline:
        push rdi
        mov ecx, MSR_TSC_DEADLINE
        rdmsr                           ; reads 0 once the deadline has passed
        shl rdx, 32
        or rax, rdx
        or [deadline_left], rax
        inc qword [n_deadline]
        pop rdi
        jmp eoi_return

on_pit:                                 ; late ticks as on_periodic
        cmp qword [n_pit], N
        jae eoi_return
        inc qword [n_pit]
        cmp qword [n_pit], N
        jb eoi_return
        push rdi
        mov edi, GSI_PIT
        call ioapic_mask
        pop rdi
        jmp eoi_return

on_gsi0:
        inc qword [n_gsi0]
        jmp eoi_return

on_com1:
        mov dx, COM1_BASE + UART_IIR    ; reading IIR clears the THR-empty source
        in al, dx
        inc qword [n_com1]
        mov dx, COM1_BASE + UART_IER
        xor al, al
        out dx, al                      ; ETBEI off ...
        cmp qword [n_com1], N
        jae eoi_return
        mov al, IER_ETBEI
        out dx, al                      ; ... and on again: THRE interrupts anew
        jmp eoi_return

on_self:
        inc qword [n_self]
        jmp eoi_return

on_spurious:                            ; no EOI for the spurious vector (SDM)
        inc qword [n_spurious]
        mov rax, rdi
        ret

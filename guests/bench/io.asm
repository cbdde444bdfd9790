; bench-io: one port write per iteration, measuring exit round-trips.
;
; Ring 0 writes to the POST diagnostic port 0x80, which no device of pyvmm's
; board or QEMU's PC does anything with.  Under a hypervisor every OUT is a
; VM exit; under an emulator it is a bus lookup.  The loop runs in ring 0
; because this project's nested KVM host raises #GP for OUT in ring 3 even
; with IOPL = 3 (seen under both pyvmm's kvm engine and QEMU -accel kvm;
; QEMU TCG and the interpreter allow it, as SDM 1 §18.5.1 says they should).
;
; Measured part: io_loop from its first instruction to its `ret` inclusive:
; IO_PROLOGUE + n * IO_K + IO_EPILOGUE instructions.

%include "bench.inc"

IO_PORT         equ 0x80        ; POST code port (IBM PC/AT I/O map): unused, write-only
IO_K            equ 4           ; .loop: mov, out, dec, jnz
IO_PROLOGUE     equ 3           ; mov, test, jz
IO_EPILOGUE     equ 1           ; ret
IO_C            equ IO_PROLOGUE + IO_EPILOGUE

        global guest_name, bench_setup, bench_rep, bench_count, bench_extra
        global measure_start, measure_end   ; first and last instruction measured

        section .rodata
guest_name:     db "bench-io", 0

        section .text
        bits 64
        default rel

bench_setup:
        ret

bench_rep:
        call io_loop
        ret

bench_count:
        imul rax, rdi, IO_K
        add rax, IO_C
        ret

bench_extra:
        ret

; io_loop(rdi = n), ring 0: the measured part.
measure_start:                          ; (same address: the measured part's first instruction)
io_loop:
        mov rcx, rdi                    ; prologue 1
        test rcx, rcx                   ; 2
        jz .done                        ; 3
.loop:
        mov eax, ecx                    ; 1: the value written: the count down
        out IO_PORT, al                 ; 2
        dec rcx                         ; 3
        jnz .loop                       ; 4
.done:
measure_end:
        ret                             ; epilogue 1: ends the measured part

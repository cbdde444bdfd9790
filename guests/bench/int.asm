; bench-int: an integer and branch loop in ring 3, paging on.
;
; Each iteration takes one xorshift64 step (Marsaglia 2003: x ^= x >> 12,
; x ^= x << 25, x ^= x >> 27) and branches on the low bit of the new state:
; odd states are added to the checksum, even ones are xored in and the
; checksum rotated.  The branch is data-dependent (about half mispredicted
; on real hardware), and both of its paths are three instructions long, so
; every iteration executes exactly INT_K instructions whatever the data.
;
; Measured part: from int_user's first instruction to its `int 0x80`
; (SYS_EXIT) inclusive, all in ring 3:
;   INT_PROLOGUE instructions, n * INT_K in the loop, INT_EPILOGUE to exit.

%include "bench.inc"
%include "idt.inc"

INT_K           equ 15          ; .loop: 9 xorshift + test + jz + 2 (either path) + dec + jnz
INT_PROLOGUE    equ 6           ; int_user up to and including `jz .done`
INT_EPILOGUE    equ 3           ; .done: store, mov eax, int 0x80
INT_C           equ INT_PROLOGUE + INT_EPILOGUE
INT_SEED        equ 0x0123456789ABCDEF

        extern user_enter, uart_puts, uart_put_hex64
        global guest_name, bench_setup, bench_rep, bench_count, bench_extra
        global measure_start, measure_end   ; first and last instruction measured

        section .rodata
guest_name:     db "bench-int", 0
msg_checksum:   db " checksum=", 0

        section .bss nobits alloc write align=8
checksum:       resq 1

        section .udata progbits alloc noexec write align=8
int_result:     dq 0            ; written by ring 3, read by the kernel

        section .text
        bits 64
        default rel

bench_setup:
        ret

; bench_rep(rdi = n): one run of the measured part; fold its result in.
bench_rep:
        mov rsi, rdi
        lea rdi, [int_user]
        xor edx, edx
        mov ecx, 1 << 1                 ; RFLAGS: only the always-one bit (IF = 0)
        call user_enter
        mov rax, [int_result]
        rol qword [checksum], 7
        xor [checksum], rax
        ret

; bench_count(rdi = n) -> rax = instructions of one measured part.
bench_count:
        imul rax, rdi, INT_K
        add rax, INT_C
        ret

bench_extra:
        lea rdi, [msg_checksum]
        call uart_puts
        mov rdi, [checksum]
        jmp uart_put_hex64

        section .utext progbits alloc exec nowrite align=16
; int_user(rdi = n), ring 3.
measure_start:                          ; (same address: the measured part's first instruction)
int_user:
        mov rcx, rdi                    ; prologue 1: iterations left
        mov rax, INT_SEED               ; 2: xorshift state
        xor ebx, ebx                    ; 3: checksum
        xor edx, edx                    ; 4
        test rcx, rcx                   ; 5
        jz .done                        ; 6: n = 0 runs no iteration
.loop:
        mov rdx, rax                    ; 1
        shr rdx, 12                     ; 2
        xor rax, rdx                    ; 3
        mov rdx, rax                    ; 4
        shl rdx, 25                     ; 5
        xor rax, rdx                    ; 6
        mov rdx, rax                    ; 7
        shr rdx, 27                     ; 8
        xor rax, rdx                    ; 9
        test al, 1                      ; 10
        jz .even                        ; 11
        add rbx, rax                    ; 12 (odd)
        jmp .join                       ; 13 (odd)
.even:
        xor rbx, rax                    ; 12 (even)
        rol rbx, 5                      ; 13 (even)
.join:
        dec rcx                         ; 14
        jnz .loop                       ; 15
.done:
        mov [int_result], rbx           ; epilogue 1
        mov eax, SYS_EXIT               ; 2
measure_end:
        int SYSCALL_VECTOR              ; 3: ends the measured part

; Number formatting for the kernel guests (no output: callers pick the sink).

        global fmt_hex64, fmt_dec

        section .rodata
hex_digits:     db "0123456789abcdef"

        section .text
        bits 64
        default rel

; fmt_hex64(rdi = value, rsi = 16-byte buffer): 16 lower-case hex digits.
fmt_hex64:
        mov ecx, 16
        lea r8, [hex_digits]
.digit:
        rol rdi, 4
        mov eax, edi
        and eax, 0xF
        mov al, [r8 + rax]
        mov [rsi], al
        inc rsi
        dec ecx
        jnz .digit
        ret

; fmt_dec(rdi = value, rsi = 20-byte buffer) -> rax = number of digits.
fmt_dec:
        sub rsp, 24
        mov rax, rdi
        mov ecx, 10
        xor r8d, r8d                    ; digits produced, least significant first
.divide:
        xor edx, edx
        div rcx
        add dl, '0'
        mov [rsp + r8], dl
        inc r8
        test rax, rax
        jnz .divide
        mov rax, r8
.copy:
        dec r8
        mov dl, [rsp + r8]
        mov [rsi], dl
        inc rsi
        test r8, r8
        jnz .copy
        add rsp, 24
        ret

; Command-line parsing over the copy boot32.asm kept in cmdline_buf.
;
; Words are separated by spaces or tabs.  Loaders differ in what they pass
; (QEMU's -kernel prepends the kernel's file name), so unknown words must be
; ignored: look words up, never parse positionally.  The first match wins.

        extern cmdline_buf
        global cmdline_find, cmdline_has_word, cmdline_get_uint

        section .text
        bits 64
        default rel

; is_delim(al) -> ZF set when al ends a word (NUL, space, tab).
%macro IS_DELIM 0
        test al, al
        jz %%done
        cmp al, ' '
        je %%done
        cmp al, 9
%%done:
%endmacro

; cmdline_find(rdi = key) -> rax = address just past the key in the first
; word that matches, or 0.  A key ending in '=' matches any word starting
; with it ("work=" matches "work=20"); another key must equal the whole word.
cmdline_find:
        lea rsi, [cmdline_buf]
.skip_spaces:
        mov al, [rsi]
        test al, al
        jz .not_found
        IS_DELIM
        jne .word
        inc rsi
        jmp .skip_spaces
.word:
        xor ecx, ecx                    ; index into key and word
.compare:
        mov dl, [rdi + rcx]
        test dl, dl
        jz .key_end
        cmp dl, [rsi + rcx]
        jne .skip_word
        inc rcx
        jmp .compare
.key_end:
        lea rax, [rsi + rcx]
        cmp byte [rdi + rcx - 1], '='
        je .found
        mov dl, [rax]                   ; whole-word key: the word must end here
        push rax
        mov al, dl
        IS_DELIM
        pop rax
        je .found
.skip_word:
        mov al, [rsi]
        IS_DELIM
        je .skip_spaces
        inc rsi
        jmp .skip_word
.found:
        ret
.not_found:
        xor eax, eax
        ret

; cmdline_has_word(rdi = word) -> rax = 1 if present, else 0.
cmdline_has_word:
        call cmdline_find
        test rax, rax
        setnz al
        movzx eax, al
        ret

; cmdline_get_uint(rdi = key ending in '=', rsi = default, rdx = maximum)
; -> rax = the decimal value (clamped to the maximum), or the default when
; the key is absent or its value is not all digits.
cmdline_get_uint:
        push rsi
        push rdx
        call cmdline_find
        pop r9                          ; maximum
        pop r8                          ; default
        test rax, rax
        jz .use_default
        mov rsi, rax
        xor eax, eax                    ; value
        xor ecx, ecx                    ; digits seen
.digit:
        movzx edx, byte [rsi]
        test dl, dl
        jz .end
        cmp dl, ' '
        je .end
        cmp dl, 9
        je .end
        sub edx, '0'
        cmp edx, 9
        ja .use_default
        inc ecx
        cmp rax, r9
        ja .next                        ; already over the maximum: just consume
        imul rax, rax, 10
        add rax, rdx
.next:
        inc rsi
        jmp .digit
.end:
        test ecx, ecx
        jz .use_default
        cmp rax, r9
        jbe .done
        mov rax, r9
.done:
        ret
.use_default:
        mov rax, r8
        ret

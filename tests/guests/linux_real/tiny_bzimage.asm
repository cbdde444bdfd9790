; A bzImage-shaped test image for `--linux-entry real`: a setup header
; (boot.rst, protocol 2.15) and 16-bit code in place of Linux's setup code,
; then a "protected-mode kernel" of one marker line.  The code checks the
; state boot.rst §"Running the Kernel" promises (CS = DS + 0x20, DS = ES =
; FS = GS = SS, SP = heap_end_ptr + 0x200, interrupts off), the header fields
; the loader fills, and prints over COM1 what the loader put in RAM: the
; command line (cmd_line_ptr), the kernel's first line (at 0x100000, reached
; as FFFF:0010) and the initrd's first 16 bytes (ramdisk_image, copied down
; with the BIOS's INT 15h AH=87h).  It ends through the debug-exit port:
; 0x10 (status 33) when every check held, 0x11 (status 35) otherwise.
; With the command line "reset" it resets the machine through the keyboard
; controller (0xFE to port 0x64) on its first run, keeping a mark in CMOS
; NVRAM (battery-backed: it outlives the reset), and passes when the firmware
; has booted it a second time.

BITS 16
ORG 0

COM1 equ 0x3F8
DEBUG_EXIT equ 0xF4
CMOS_INDEX equ 0x70
CMOS_DATA equ 0x71
CMOS_MARK equ 0x48              ; an NVRAM byte SeaBIOS leaves alone
MARK equ 0xA5

    times 0x1F1 - ($ - $$) db 0
    db 2                        ; 0x1F1 setup_sects
    dw 0                        ; 0x1F2 root_flags
    dd 0                        ; 0x1F4 syssize
    dw 0                        ; 0x1F8 ram_size
    dw 0xFFFF                   ; 0x1FA vid_mode
    dw 0                        ; 0x1FC root_dev
    dw 0xAA55                   ; 0x1FE boot_flag
    jmp short start             ; 0x200 jump
    db "HdrS"                   ; 0x202 header
    dw 0x020F                   ; 0x206 version
    dd 0                        ; 0x208 realmode_swtch
    dw 0                        ; 0x20C start_sys_seg
    dw 0                        ; 0x20E kernel_version
type_of_loader: db 0            ; 0x210
loadflags: db 1                 ; 0x211 LOADED_HIGH
    dw 0                        ; 0x212 setup_move_size
    dd 0x100000                 ; 0x214 code32_start
ramdisk_image: dd 0             ; 0x218
ramdisk_size: dd 0              ; 0x21C
    dd 0                        ; 0x220 bootsect_kludge
heap_end_ptr: dw 0              ; 0x224
    db 0, 0                     ; 0x226 ext_loader_ver, ext_loader_type
cmd_line_ptr: dd 0              ; 0x228
    dd 0x7FFFFFFF               ; 0x22C initrd_addr_max
    dd 0x200000                 ; 0x230 kernel_alignment
    db 0, 0                     ; 0x234 relocatable_kernel, min_alignment
    dw 0                        ; 0x236 xloadflags
    dd 255                      ; 0x238 cmdline_size
    dd 0                        ; 0x23C hardware_subarch
    dq 0                        ; 0x240 hardware_subarch_data
    dd 0, 0                     ; 0x248 payload_offset, payload_length
    dq 0                        ; 0x250 setup_data
    dq 0x100000                 ; 0x258 pref_address
    dd 0x1000                   ; 0x260 init_size
    dd 0, 0                     ; 0x264 handover_offset, kernel_info_offset
%if ($ - $$) != 0x26C
%error "setup header layout"
%endif

start:
    pushf
    pop ax
    test ax, 0x200              ; IF
    jnz fail_if
    mov ax, ds
    add ax, 0x20
    mov bx, cs
    cmp ax, bx
    jne fail_segments
    mov ax, ds
    mov bx, es
    cmp ax, bx
    jne fail_segments
    mov bx, fs
    cmp ax, bx
    jne fail_segments
    mov bx, gs
    cmp ax, bx
    jne fail_segments
    mov bx, ss
    cmp ax, bx
    jne fail_segments
    mov ax, [heap_end_ptr]
    add ax, 0x200
    cmp ax, sp
    jne fail_stack
    cmp byte [type_of_loader], 0xFF
    jne fail_header
    test byte [loadflags], 0x80 ; CAN_USE_HEAP
    jz fail_header

    mov si, msg_cmdline
    call puts
    xor eax, eax                ; the command line: linear cmd_line_ptr - DS * 16
    mov ax, ds
    shl eax, 4
    mov ebx, [cmd_line_ptr]
    sub ebx, eax
    cmp ebx, 0xFFFF
    ja fail_header
    mov si, bx
    mov [cmdline_offset], bx
    call puts
    call newline

    mov si, msg_kernel          ; the protected-mode part at 0x100000 = FFFF:0010
    call puts
    push ds
    mov ax, 0xFFFF
    mov ds, ax
    mov si, 0x10
    call puts
    pop ds

    cmp dword [ramdisk_size], 16
    jb fail_initrd
    mov eax, [ramdisk_image]    ; source descriptor base: the initrd
    mov [gdt_source + 2], ax
    shr eax, 16
    mov [gdt_source + 4], al
    mov [gdt_source + 7], ah
    xor eax, eax                ; destination: initrd_copy
    mov ax, ds
    shl eax, 4
    add eax, initrd_copy
    mov [gdt_dest + 2], ax
    shr eax, 16
    mov [gdt_dest + 4], al
    mov [gdt_dest + 7], ah
    mov si, move_gdt
    mov cx, 8                   ; words
    mov ah, 0x87
    int 0x15
    jc fail_initrd
    mov si, msg_initrd
    call puts
    mov si, initrd_copy
    mov cx, 16
.initrd_char:
    lodsb
    call putc
    loop .initrd_char
    call newline

    mov si, [cmdline_offset]    ; the command line "reset"?
    mov di, word_reset
    mov cx, 6
    repe cmpsb
    jne .passed
    mov al, CMOS_MARK
    out CMOS_INDEX, al
    in al, CMOS_DATA
    cmp al, MARK
    je .second_boot
    mov al, CMOS_MARK
    out CMOS_INDEX, al
    mov al, MARK
    out CMOS_DATA, al
    mov si, msg_resetting
    call puts
    mov al, 0xFE                ; pulse the reset line
    out 0x64, al
    hlt
.second_boot:
    mov si, msg_again
    call puts
.passed:
    mov si, msg_ok
    call puts
    mov al, 0x10
    out DEBUG_EXIT, al
    hlt

fail_if:
    mov si, msg_fail_if
    jmp fail
fail_segments:
    mov si, msg_fail_segments
    jmp fail
fail_stack:
    mov si, msg_fail_stack
    jmp fail
fail_header:
    mov si, msg_fail_header
    jmp fail
fail_initrd:
    mov si, msg_fail_initrd
fail:
    push cs                     ; the messages, addressed from the setup segment
    pop ax
    sub ax, 0x20
    mov ds, ax
    call puts
    mov al, 0x11
    out DEBUG_EXIT, al
    hlt

; ds:si -> COM1 up to the NUL or a newline.
puts:
    lodsb
    test al, al
    jz .done
    call putc
    cmp al, 10
    jne puts
.done:
    ret

newline:
    mov al, 10
putc:
    push dx
    push ax
    mov dx, COM1 + 5
.wait:
    in al, dx
    test al, 0x20
    jz .wait
    pop ax
    mov dx, COM1
    out dx, al
    pop dx
    ret

msg_cmdline: db "cmdline: ", 0
msg_kernel: db "kernel: ", 0
msg_initrd: db "initrd: ", 0
msg_ok: db "real-entry checks passed", 10, 0
msg_resetting: db "resetting the machine", 10, 0
msg_again: db "booted again after the reset", 10, 0
word_reset: db "reset", 0
cmdline_offset: dw 0
msg_fail_if: db "FAIL: interrupts enabled at entry", 10, 0
msg_fail_segments: db "FAIL: segments at entry", 10, 0
msg_fail_stack: db "FAIL: SP is not the heap end", 10, 0
msg_fail_header: db "FAIL: setup header fields", 10, 0
msg_fail_initrd: db "FAIL: initrd", 10, 0

    align 8
move_gdt:                       ; INT 15h AH=87h descriptor table
    dq 0, 0
gdt_source: dw 0xFFFF, 0, 0x9300, 0
gdt_dest: dw 0xFFFF, 0, 0x9300, 0
    dq 0, 0
initrd_copy: times 16 db 0

    times 1536 - ($ - $$) db 0  ; end of the real-mode part (3 sectors)
    db "tiny protected-mode kernel", 10
    times 2048 - ($ - $$) db 0

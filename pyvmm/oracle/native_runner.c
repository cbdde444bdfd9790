/*
 * pyvmm native oracle: runs a block of x86 code on the host CPU, in ring 3,
 * in 64-bit, 32-bit (compatibility) or 16-bit (protected, via an LDT code
 * segment) mode, and reports the architectural state afterwards.
 *
 * Protocol (little-endian, over stdin/stdout; see pyvmm/oracle/native.py):
 *   on start-up the runner writes a hello record;
 *   each request:  u32 mode, u32 code_len, u64 gpr[16], u64 rflags,
 *                  code_len bytes of code, DATA_SIZE bytes of data area,
 *                  512 bytes of FXSAVE image (x87/MMX/SSE state, MXCSR);
 *   each response: u32 status (0 done, 1 exception, 2 timeout),
 *                  u32 vector, u64 error_code, u64 fault_address,
 *                  u64 gpr[16], u64 rflags, u64 rip, DATA_SIZE bytes,
 *                  512 bytes of FXSAVE image.
 * The FP/SIMD state is loaded with FXRSTOR before the jump and stored with
 * FXSAVE in the exit stub (SDM Vol. 2A "FXSAVE" layout); after a fault it is
 * the image the kernel saved in the signal frame (uc_mcontext.fpregs, the
 * same layout).  The host's own state is saved and restored around the run.
 *
 * How control goes in and out (Intel SDM Vol. 3A §5.8, far transfers):
 *   64-bit code is entered with an indirect near jmp; 32-bit and 16-bit code
 *   with an indirect far jmp to the Linux 32-bit user code selector 0x23 or
 *   to a 16-bit LDT code segment.  The code's own trailer jumps (far, to the
 *   64-bit user selector 0x33 when needed) to exit_stub, which stores every
 *   register without touching the guest's stack and returns to C.
 * Faults arrive as signals on an alternate stack (so the guest's stack, which
 * lies inside the data area, is never written by the kernel); the handler
 * reads the vector from the kernel-saved trap number and siglongjmps out.
 */
#define _GNU_SOURCE
#include <asm/ldt.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef CODE_BASE
#define CODE_BASE 0x00200000UL
#endif
#ifndef DATA_BASE
#define DATA_BASE 0x00210000UL
#endif
#define CODE_SIZE 0x10000UL
#define DATA_SIZE 0x10000UL

#define MAGIC 0x4f4d5650u /* "PVMO" */

/* Linux x86-64 user segment selectors (arch/x86/include/asm/segment.h). */
#define USER32_CS 0x23
#define USER_DS 0x2b
#define USER_CS 0x33
/* LDT selectors: index << 3 | TI=1 (LDT) | RPL=3. */
#define LDT_CODE16_SEL ((0 << 3) | 4 | 3)
#define LDT_DATA16_SEL ((1 << 3) | 4 | 3)

struct regs {
    uint64_t gpr[16];
    uint64_t rflags;
};

struct __attribute__((packed)) far_ptr32 {
    uint32_t offset;
    uint16_t selector;
};

/* Globals referenced by absolute address from the assembly below; the
 * binary is linked non-PIE well below 2 GiB so that works in every mode. */
struct regs g_in, g_out;
uint8_t g_fx_in[512] __attribute__((aligned(16)));
uint8_t g_fx_out[512] __attribute__((aligned(16)));
uint8_t g_fx_host[512] __attribute__((aligned(16)));
uint64_t g_host_rsp;
uint64_t g_entry64;
struct far_ptr32 g_far_entry;
uint16_t g_guest_sel;

static sigjmp_buf g_jmp;
static volatile uint64_t g_vector, g_error, g_fault_rip, g_fault_addr;
static volatile int g_timed_out;

void exit_stub(void);
int enter_guest(int mode);

/* GPR n is loaded from / stored to g_in/g_out + 8n (encoding order, SDM Vol. 2A Table 2-2). */
#define LOAD_GPRS                                                              \
    "push qword ptr [g_in + 128]\n\tpopfq\n\t"                                 \
    "mov rax, [g_in + 0]\n\tmov rcx, [g_in + 8]\n\tmov rdx, [g_in + 16]\n\t"   \
    "mov rbx, [g_in + 24]\n\tmov rbp, [g_in + 40]\n\tmov rsi, [g_in + 48]\n\t" \
    "mov rdi, [g_in + 56]\n\tmov r8, [g_in + 64]\n\tmov r9, [g_in + 72]\n\t"   \
    "mov r10, [g_in + 80]\n\tmov r11, [g_in + 88]\n\tmov r12, [g_in + 96]\n\t" \
    "mov r13, [g_in + 104]\n\tmov r14, [g_in + 112]\n\tmov r15, [g_in + 120]\n\t" \
    "mov rsp, [g_in + 32]\n\t"

__asm__(
    ".intel_syntax noprefix\n"
    ".text\n"
    ".globl enter_guest\n"
    "enter_guest:\n\t"
    "push rbx\n\tpush rbp\n\tpush r12\n\tpush r13\n\tpush r14\n\tpush r15\n\t"
    "mov [g_host_rsp], rsp\n\t"
    "fxsave64 [g_fx_host]\n\t"
    "fxrstor64 [g_fx_in]\n\t"
    "cmp edi, 64\n\t"
    "je 1f\n\t"
    /* 32/16-bit: data segments the code will use (ignored in 64-bit mode). */
    "movzx eax, word ptr [g_guest_sel]\n\t"
    "mov ds, eax\n\tmov es, eax\n\tmov ss, eax\n\t"
    LOAD_GPRS
    "jmp fword ptr [g_far_entry]\n"
    "1:\n\t"
    LOAD_GPRS
    "jmp qword ptr [g_entry64]\n"
    ".globl exit_stub\n"
    "exit_stub:\n\t"
    "mov [g_out + 0], rax\n\tmov [g_out + 8], rcx\n\tmov [g_out + 16], rdx\n\t"
    "mov [g_out + 24], rbx\n\tmov [g_out + 32], rsp\n\tmov [g_out + 40], rbp\n\t"
    "mov [g_out + 48], rsi\n\tmov [g_out + 56], rdi\n\tmov [g_out + 64], r8\n\t"
    "mov [g_out + 72], r9\n\tmov [g_out + 80], r10\n\tmov [g_out + 88], r11\n\t"
    "mov [g_out + 96], r12\n\tmov [g_out + 104], r13\n\tmov [g_out + 112], r14\n\t"
    "mov [g_out + 120], r15\n\t"
    "mov rsp, [g_host_rsp]\n\t"
    "pushfq\n\tpop qword ptr [g_out + 128]\n\t"
    "fxsave64 [g_fx_out]\n\t"
    "fxrstor64 [g_fx_host]\n\t"
    "mov eax, 0x2b\n\tmov ss, eax\n\tmov ds, eax\n\tmov es, eax\n\t"
    "cld\n\t"
    "pop r15\n\tpop r14\n\tpop r13\n\tpop r12\n\tpop rbp\n\tpop rbx\n\t"
    "xor eax, eax\n\t"
    "ret\n"
    ".att_syntax prefix\n");

/* Kernel pt_regs order -> encoding order. */
static const int kGregIndex[16] = {
    REG_RAX, REG_RCX, REG_RDX, REG_RBX, REG_RSP, REG_RBP, REG_RSI, REG_RDI,
    REG_R8, REG_R9, REG_R10, REG_R11, REG_R12, REG_R13, REG_R14, REG_R15,
};

static void on_fault(int sig, siginfo_t *info, void *ctx)
{
    ucontext_t *uc = ctx;
    greg_t *g = uc->uc_mcontext.gregs;
    for (int i = 0; i < 16; i++)
        g_out.gpr[i] = (uint64_t)g[kGregIndex[i]];
    g_out.rflags = (uint64_t)g[REG_EFL];
    g_fault_rip = (uint64_t)g[REG_RIP];
    g_error = (uint64_t)g[REG_ERR];
    g_fault_addr = (uint64_t)(uintptr_t)info->si_addr;
    /* REG_TRAPNO is the hardware vector the kernel saw (SDM Vol. 3A Table 6-1). */
    g_vector = (uint64_t)g[REG_TRAPNO];
    g_timed_out = sig == SIGALRM;
    if (uc->uc_mcontext.fpregs)
        memcpy(g_fx_out, uc->uc_mcontext.fpregs, sizeof g_fx_out);
    siglongjmp(g_jmp, 1);
}

static void die(const char *what)
{
    fprintf(stderr, "pyvmm-oracle: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void read_exact(void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t n = read(0, p, len);
        if (n == 0)
            exit(0); /* parent closed the pipe */
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("read");
        }
        p += n;
        len -= (size_t)n;
    }
}

static void write_exact(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = write(1, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("write");
        }
        p += n;
        len -= (size_t)n;
    }
}

/* Install one 16-bit segment in the LDT (modify_ldt(2), func 0x11). */
static int install_ldt16(int entry, unsigned long base, int code)
{
    struct user_desc d;
    memset(&d, 0, sizeof d);
    d.entry_number = (unsigned)entry;
    d.base_addr = (unsigned)base;
    d.limit = 0xFFFF;
    d.seg_32bit = 0;
    d.contents = code ? MODIFY_LDT_CONTENTS_CODE : MODIFY_LDT_CONTENTS_DATA;
    d.read_exec_only = 0;
    d.limit_in_pages = 0;
    d.seg_not_present = 0;
    d.useable = 1;
    return (int)syscall(SYS_modify_ldt, 0x11, &d, sizeof d);
}

int main(void)
{
    uint8_t *code = mmap((void *)CODE_BASE, CODE_SIZE, PROT_READ | PROT_WRITE | PROT_EXEC,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (code != (uint8_t *)CODE_BASE)
        die("mmap code");
    uint8_t *data = mmap((void *)DATA_BASE, DATA_SIZE, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (data != (uint8_t *)DATA_BASE)
        die("mmap data");

    uint32_t ldt_ok = install_ldt16(0, CODE_BASE, 1) == 0 && install_ldt16(1, DATA_BASE, 0) == 0;
    uint32_t ldt_errno = ldt_ok ? 0 : (uint32_t)errno;

    static uint8_t altstack[1 << 16];
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
    if (sigaltstack(&ss, NULL))
        die("sigaltstack");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGALRM};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        if (sigaction(sigs[i], &sa, NULL))
            die("sigaction");

    uint64_t hello[6] = {MAGIC, CODE_BASE, DATA_BASE, DATA_SIZE,
                         (uint64_t)(uintptr_t)exit_stub, ldt_ok | ((uint64_t)ldt_errno << 32)};
    write_exact(hello, sizeof hello);

    size_t last_len = CODE_SIZE;
    for (;;) {
        uint32_t hdr[2];
        read_exact(hdr, sizeof hdr);
        uint32_t mode = hdr[0], len = hdr[1];
        if (len > CODE_SIZE)
            exit(3);
        read_exact(&g_in, sizeof g_in);
        memset(code, 0xCC, last_len); /* int3 beyond the code */
        read_exact(code, len);
        read_exact(data, DATA_SIZE);
        read_exact(g_fx_in, sizeof g_fx_in);
        last_len = len;
        memset(g_fx_out, 0, sizeof g_fx_out);

        g_vector = g_error = g_fault_rip = g_fault_addr = 0;
        g_timed_out = 0;
        memset(&g_out, 0, sizeof g_out);
        if (mode == 64) {
            g_entry64 = CODE_BASE;
        } else if (mode == 32) {
            g_far_entry.offset = (uint32_t)CODE_BASE;
            g_far_entry.selector = USER32_CS;
            g_guest_sel = USER_DS;
        } else {
            g_far_entry.offset = 0;
            g_far_entry.selector = LDT_CODE16_SEL;
            g_guest_sel = LDT_DATA16_SEL;
        }

        uint32_t status;
        uint64_t rip;
        alarm(2);
        if (sigsetjmp(g_jmp, 1) == 0) {
            enter_guest((int)mode);
            alarm(0);
            status = 0;
            rip = 0; /* reported by the caller: the trailer's address */
        } else {
            alarm(0);
            __asm__ volatile("mov %0, %%ds\n\tmov %0, %%es\n\tmov %0, %%ss"
                             :: "r"((uint32_t)USER_DS));
            __asm__ volatile("fxrstor64 %0" :: "m"(g_fx_host));
            status = g_timed_out ? 2 : 1;
            rip = g_fault_rip;
        }
        uint32_t rhdr[2] = {status, (uint32_t)g_vector};
        uint64_t extra[2] = {g_error, g_fault_addr};
        write_exact(rhdr, sizeof rhdr);
        write_exact(extra, sizeof extra);
        write_exact(&g_out, sizeof g_out);
        write_exact(&rip, sizeof rip);
        write_exact(data, DATA_SIZE);
        write_exact(g_fx_out, sizeof g_fx_out);
    }
}

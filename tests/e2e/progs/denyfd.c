/* denyfd: runs COMMAND under a seccomp filter that makes some system calls fail with EPERM, as
 * container runtimes' default profiles do: pidfd_getfd() (Docker's and containerd's without
 * CAP_SYS_PTRACE; the default) or process_vm_readv/writev (containerd's). For the supervised
 * mode's refused probe and its /proc/PID/mem fallback (tests/e2e/test_supervise.py).
 * Usage: denyfd [--deny pidfd_getfd|process_vm]... [--] COMMAND [ARGS...] */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

#define DENY(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM)

int main(int argc, char **argv)
{
	struct sock_filter f[16] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
	};
	unsigned short n = 4;
	int i = 1;

	for (; i + 1 < argc && strcmp(argv[i], "--deny") == 0; i += 2) {
		if (strcmp(argv[i + 1], "pidfd_getfd") == 0) {
			struct sock_filter d[] = {DENY(SYS_pidfd_getfd)};
			memcpy(f + n, d, sizeof(d));
			n += 2;
		} else if (strcmp(argv[i + 1], "process_vm") == 0) {
			struct sock_filter d[] = {DENY(SYS_process_vm_readv), DENY(SYS_process_vm_writev)};
			memcpy(f + n, d, sizeof(d));
			n += 4;
		} else {
			fprintf(stderr, "denyfd: unknown --deny %s\n", argv[i + 1]);
			return 2;
		}
	}
	if (n == 4) {
		struct sock_filter d[] = {DENY(SYS_pidfd_getfd)};
		memcpy(f + n, d, sizeof(d));
		n += 2;
	}
	f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	if (i < argc && strcmp(argv[i], "--") == 0)
		i++;
	if (i >= argc) {
		fprintf(stderr, "usage: denyfd [--deny pidfd_getfd|process_vm]... [--] COMMAND [ARGS...]\n");
		return 2;
	}
	struct sock_fprog prog = {.len = n, .filter = f};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
	    syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
		fprintf(stderr, "denyfd: cannot install the filter: %s\n", strerror(errno));
		return 1;
	}
	execvp(argv[i], argv + i);
	fprintf(stderr, "denyfd: %s: %s\n", argv[i], strerror(errno));
	return 127;
}

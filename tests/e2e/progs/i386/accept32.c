/* accept32: an i386 program (int 0x80, no libc) that calls accept4(0, ...) and
 * socketcall(SYS_ACCEPT4, ...) on its stdin. Exit status: the errno both gave when they gave
 * the same (1: EPERM, the supervised mode's filter refusing the i386 ABI it cannot serve;
 * 88: ENOTSOCK, the kernel's answer on /dev/null), else 99. Built with gcc -m32 -nostdlib. */
#define I386_EXIT 1
#define I386_SOCKETCALL 102
#define I386_ACCEPT4 364
#define SYS_ACCEPT4 18 /* socketcall's call number */

static long sys(long nr, long a, long b, long c, long d)
{
	long r;
	__asm__ volatile("int $0x80" : "=a"(r) : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(d) : "memory");
	return r;
}

void _start(void)
{
	static long args[4] = {0, 0, 0, 0};
	long e1 = -sys(I386_ACCEPT4, 0, 0, 0, 0);
	long e2 = -sys(I386_SOCKETCALL, SYS_ACCEPT4, (long)args, 0, 0);
	sys(I386_EXIT, e1 == e2 ? e1 : 99, 0, 0, 0);
	for (;;)
		;
}

/* vforkexit: a program that ends through _exit() (as dash and many daemons' children do), after
 * a vfork() child that also ends through _exit() in the parent's memory. Prints "child" once
 * the child is gone, waits for a line on stdin, then _exit(0) (or exit(0) with --exit).
 * For tests/e2e/test_stats.py: the counters file of a process ending through _exit(). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char line[16];
	int st;
	pid_t pid = vfork();

	if (pid == 0)
		_exit(3);
	if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 3) {
		fprintf(stderr, "vforkexit: the vfork child went wrong\n");
		return 1;
	}
	printf("child\n");
	fflush(stdout);
	if (fgets(line, sizeof(line), stdin) == NULL)
		return 1;
	if (argc > 1 && strcmp(argv[1], "--exit") == 0)
		exit(0);
	_exit(0);
}

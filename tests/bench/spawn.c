/* spawn: scenario H's timer. Runs a program N times, one after the other (fork, execve, wait),
 * with the environment it is given, and prints the mean wall time of one run.
 *
 * Usage: spawn N [NAME=VALUE ...] -- PROGRAM [ARGS]
 *   The child's environment is exactly the NAME=VALUE list (plus nothing else), so the runs
 *   with and without LD_PRELOAD differ only in what they are told.
 * Output: "spawn runs=N secs=S us_per_run=X cpu_us_per_run=X minflt_per_run=X"
 *   (cpu and page faults: the children's, from getrusage(RUSAGE_CHILDREN)) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	int i, sep = -1;
	if (argc < 4)
		goto usage;
	long n = strtol(argv[1], NULL, 10);
	for (i = 2; i < argc; i++)
		if (!strcmp(argv[i], "--")) {
			sep = i;
			break;
		}
	if (n < 1 || sep < 0 || sep + 1 >= argc)
		goto usage;
	char **envp = calloc((size_t)(sep - 1), sizeof(char *));
	if (!envp)
		return 1;
	for (i = 2; i < sep; i++)
		envp[i - 2] = argv[i];
	char **args = argv + sep + 1;
	double t0 = now_s();
	for (long k = 0; k < n; k++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("spawn: fork");
			return 1;
		}
		if (pid == 0) {
			execve(args[0], args, envp);
			_exit(127);
		}
		int st;
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "spawn: %s failed (status %d)\n", args[0], st);
			return 1;
		}
	}
	double secs = now_s() - t0;
	struct rusage ru;
	getrusage(RUSAGE_CHILDREN, &ru);
	double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
		     (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	printf("spawn runs=%ld secs=%.3f us_per_run=%.1f cpu_us_per_run=%.1f minflt_per_run=%.1f\n", n,
	       secs, secs / (double)n * 1e6, cpu / (double)n * 1e6, (double)ru.ru_minflt / (double)n);
	return 0;
usage:
	fprintf(stderr, "usage: spawn N [NAME=VALUE ...] -- PROGRAM [ARGS]\n");
	return 2;
}

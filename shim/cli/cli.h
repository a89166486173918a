/* What the programs a person runs share: messages of one line each, "PROG: ...", so scripts
 * can show them as they are, and options with values. Include after defining PROG and
 * EXIT_USAGE. */
#ifndef SHIM_CLI_CLI_H
#define SHIM_CLI_CLI_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((format(printf, 1, 0))) static void vsay(const char *fmt, va_list ap);
__attribute__((format(printf, 1, 2), unused)) static void say(const char *fmt, ...);
__attribute__((format(printf, 2, 3), noreturn)) static void die(int status, const char *fmt, ...);
#define usage_error(...) die(EXIT_USAGE, __VA_ARGS__)

static void vsay(const char *fmt, va_list ap)
{
	fputs(PROG ": ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

static void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
}

static void die(int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
	exit(status);
}

#ifndef PROXYSHIM_VERSION
#error "PROXYSHIM_VERSION is not defined: the Makefile passes it from the file VERSION"
#endif

/* --version, as GNU tools print it: the program and its version, then the copyright. */
__attribute__((unused)) static void print_version(void)
{
	fputs(PROG " " PROXYSHIM_VERSION "\n"
	      "Copyright (C) 2026 the proxyshim authors.\n"
	      "There is NO WARRANTY, to the extent permitted by law.\n",
	      stdout);
	exit(fflush(stdout) == 0 ? 0 : 1);
}

/* An option with a value: "--name VALUE" or "--name=VALUE". Returns the value or NULL when arg
 * is not this option; advances *i past a separate value. */
__attribute__((unused)) static char *opt_value(char **argv, int argc, int *i, const char *name)
{
	size_t n = strlen(name);
	char *arg = argv[*i];

	if (strncmp(arg, name, n) != 0)
		return NULL;
	if (arg[n] == '=')
		return arg + n + 1;
	if (arg[n] != '\0')
		return NULL;
	if (*i + 1 >= argc)
		usage_error("%s needs a value", name);
	(*i)++;
	return argv[*i];
}

#endif

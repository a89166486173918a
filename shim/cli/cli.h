/* Messages of the programs a person runs: one line each, "PROG: ...", so scripts can show it as
 * it is. Include after defining PROG and EXIT_USAGE. */
#ifndef SHIM_CLI_SAY_H
#define SHIM_CLI_SAY_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

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

#endif

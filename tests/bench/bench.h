/* Shared by the bench programs: a decimal count from the command line, digits only. */
#ifndef PROXYSHIM_BENCH_H
#define PROXYSHIM_BENCH_H

/* The count s spells, or usage() (which exits) when it is empty or not all digits. */
static inline unsigned long long bench_number(const char *s, void (*usage)(void))
{
	unsigned long long v = 0;
	if (!*s)
		usage();
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			usage();
		v = v * 10 + (unsigned long long)(*s - '0');
	}
	return v;
}

#endif

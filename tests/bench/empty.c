/* empty.so: scenario H's floor. A shared library with nothing in it, linked like
 * libproxyshim.so: preloading it costs what preloading any library costs (the dynamic loader's
 * open, one mmap per segment, mprotect for RELRO, the page faults), which the shim cannot save. */
int proxyshim_bench_empty(void);

int proxyshim_bench_empty(void)
{
	return 0;
}

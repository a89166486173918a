/* The library run as a program through the dynamic loader of the image it is in
 * (`/lib64/ld-linux-x86-64.so.2 libproxyshim.so`, `/lib/ld-musl-x86_64.so.1 libproxyshim.so`):
 * "version=V", then the settings it would take in a program started with this environment, as
 * proxyshim_settings() gives them. It is how a statically linked wrapper, which cannot
 * dlopen() the library, answers `proxyshim --check`, and it loads the library the way a
 * program here would. A bad value ends it in shim_config() (one line naming the variable,
 * exit 1); else exit 0. The loader runs no constructor of its main object: nothing hooked
 * runs here but what this calls. */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include "proxyshim.h"
#include "shim.h"

/* The ELF entry point (-Wl,-e): no return address, the stack as the kernel left it. */
__attribute__((noreturn, used, force_align_arg_pointer)) void shim_selfcheck_main(void);
void shim_selfcheck_main(void)
{
	char buf[8192];
	int n, m;

	shim_config();
	n = snprintf(buf, sizeof(buf), "version=%s\n", proxyshim_version());
	m = proxyshim_settings(buf + n, sizeof(buf) - (size_t)n);
	if (m < 0)
		_exit(1);
	n += m;
	if ((size_t)n >= sizeof(buf))
		n = (int)sizeof(buf) - 1;
	for (ssize_t off = 0, w; off < n; off += w) {
		w = write(1, buf + off, (size_t)(n - off));
		if (w < 0 && errno == EINTR)
			w = 0;
		else if (w <= 0)
			_exit(1);
	}
	_exit(0);
}

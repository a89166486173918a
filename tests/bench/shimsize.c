/* shimsize: the shim's per-connection state, from the library's own definition (core/conn.h). */
#include <stdio.h>

#include "preload/shim.h"

int main(void)
{
	printf("shim_fd bytes=%zu\n", sizeof(struct shim_fd));
	return 0;
}

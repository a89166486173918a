/* The pure half of poll() and select() over parked connections (poll.c): the program's
 * pollfd array or read set merged with the parking epoll fds, and the results folded back.
 * No hooks, no globals: which fd has a park is asked of a lookup function the caller passes,
 * once per entry, and everything after is read from what that one look recorded (a park can
 * fill or empty at any moment while another thread parks or takes a connection). */
#ifndef SHIM_POLLMERGE_H
#define SHIM_POLLMERGE_H

#include <poll.h>
#include <sys/select.h>

/* The parking epoll fd to watch beside fd, or -1 (poll.c passes shim_park_pollfd()). */
typedef int (*shim_park_lookup)(int fd, void *ctx);

#define SHIM_POLLMERGE_STACK 64

/* One of the program's entries that watches a listener with connections parked: its index,
 * and the parking epoll fd it had when looked at. */
struct shim_poll_hit {
	nfds_t i;
	int pfd;
};

/* The merged array: the program's n entries, then one POLLIN entry per hit, in the order of
 * the entries they stand for. Up to SHIM_POLLMERGE_STACK of each without allocating. */
struct shim_pollmerge {
	struct pollfd *all;
	struct shim_poll_hit *hit;
	nfds_t n, nhit;
	struct pollfd all_stack[SHIM_POLLMERGE_STACK];
	struct shim_poll_hit hit_stack[SHIM_POLLMERGE_STACK];
};

/* Looks up each entry that asks for POLLIN, once, and builds m->all. Returns the number of
 * entries in m->all (n + the hits), or 0 when there is nothing to merge (no park, or no
 * memory for the merged array): then poll the program's own array. Entries past what the
 * hit list could hold (no memory to grow it) are watched without their parks. */
nfds_t shim_pollmerge_build(struct shim_pollmerge *m, const struct pollfd *fds, nfds_t n,
			    shim_park_lookup look, void *ctx);
/* After poll() on m->all returned r: each entry's revents as poll() gave them, plus POLLIN
 * when its park's fd was readable (only POLLIN: a park's other bits are its own); returns the
 * number of the program's entries with revents, or r itself when r < 0 (fds untouched). */
int shim_pollmerge_fold(const struct shim_pollmerge *m, struct pollfd *fds, int r);
/* Frees what build allocated. Build and free may change errno: the caller (poll.c) keeps it. */
void shim_pollmerge_free(struct shim_pollmerge *m);

#define SHIM_SELECTMERGE_MAX 16 /* listeners with parks merged per call; more are left alone */

/* The read set with the parking fds added: listener lfd[i] stands for park pfd[i]. */
struct shim_selectmerge {
	int k, top;
	int lfd[SHIM_SELECTMERGE_MAX], pfd[SHIM_SELECTMERGE_MAX];
};

/* Looks up each fd below nfds set in r, once, and writes into rr a copy of r (its first
 * `bytes`, the rest clear) with each park's fd added; m->top is the nfds to pass (parking
 * fds may lie above nfds). Returns the number of parks merged, 0 for none (rr then unset). */
int shim_selectmerge_build(struct shim_selectmerge *m, const fd_set *r, int nfds, size_t bytes,
			   fd_set *rr, shim_park_lookup look, void *ctx);
/* After select() on rr returned res: each readable park's bit moved to its listener's, and
 * the count corrected (a listener readable twice counts once). Returns the count. */
int shim_selectmerge_fold(const struct shim_selectmerge *m, fd_set *rr, int res);

#endif

/* The poll()/select() merge with the parking epoll fds (shim/preload/pollmerge.c), driven
 * by a lookup of the test's own: which entries get a park entry, how many times each fd is
 * looked at, the stack limit, and how readiness and counts are folded back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "preload/pollmerge.h"

#define MAXFD 512

/* The test's parks: park[fd] is the parking fd beside listener fd, or -1. Each look is
 * counted; with `flip` set, an fd's second look answers differently (its park emptied or
 * filled meanwhile), which must never matter since each entry is looked at once. */
struct parks {
	int park[MAXFD];
	int looks[MAXFD];
	int flip;
};

static int lookup(int fd, void *ctx)
{
	struct parks *p = ctx;
	int first = p->looks[fd]++ == 0;

	if (p->flip && !first)
		return p->park[fd] >= 0 ? -1 : 400 + fd;
	return p->park[fd];
}

static void parks_init(struct parks *p)
{
	for (int i = 0; i < MAXFD; i++) {
		p->park[i] = -1;
		p->looks[i] = 0;
	}
	p->flip = 0;
}

static struct pollfd pfd(int fd, short events)
{
	struct pollfd f = {.fd = fd, .events = events, .revents = 0};
	return f;
}

/* Where in m->all the park entry for fd's hit k is (the extra entries follow in order). */
static void assert_merged(const struct shim_pollmerge *m, const struct pollfd *fds, nfds_t n,
			  const int *want_pfd, nfds_t nwant)
{
	assert_int_equal(m->n, n);
	assert_int_equal(m->nhit, nwant);
	for (nfds_t i = 0; i < n; i++) {
		assert_int_equal(m->all[i].fd, fds[i].fd);
		assert_int_equal(m->all[i].events, fds[i].events);
	}
	for (nfds_t k = 0; k < nwant; k++) {
		assert_int_equal(m->all[n + k].fd, want_pfd[k]);
		assert_int_equal(m->all[n + k].events, POLLIN);
		assert_int_equal(m->all[n + k].revents, 0);
	}
}

/* Nothing parked: nothing to merge, every entry that asks for POLLIN looked at once. */
static void test_no_park(void **state)
{
	struct pollfd fds[3] = {pfd(3, POLLIN), pfd(4, POLLIN | POLLOUT), pfd(5, POLLOUT)};
	struct shim_pollmerge m;
	struct parks p;
	(void)state;

	parks_init(&p);
	assert_int_equal(shim_pollmerge_build(&m, fds, 3, lookup, &p), 0);
	assert_int_equal(p.looks[3], 1);
	assert_int_equal(p.looks[4], 1);
	assert_int_equal(p.looks[5], 0); /* POLLIN not asked for: not looked at */
	shim_pollmerge_free(&m);
	assert_int_equal(shim_pollmerge_build(&m, fds, 0, lookup, &p), 0);
	shim_pollmerge_free(&m);
}

/* Entries with and without parks; POLLIN not requested on a parked listener adds nothing. */
static void test_mixed(void **state)
{
	struct pollfd fds[4] = {pfd(3, POLLIN), pfd(7, POLLIN), pfd(8, POLLOUT), pfd(9, POLLIN | POLLPRI)};
	static const int want[] = {100, 109};
	struct shim_pollmerge m;
	struct parks p;
	int r;
	(void)state;

	parks_init(&p);
	p.park[3] = 100;
	p.park[8] = 108; /* parked, but the program asks only for POLLOUT */
	p.park[9] = 109;
	assert_int_equal(shim_pollmerge_build(&m, fds, 4, lookup, &p), 6);
	assert_merged(&m, fds, 4, want, 2);
	assert_int_equal(p.looks[8], 0);

	/* poll() answers: the listener 3 itself idle but its park readable; 7 readable; 8
	 * writable; 9's park has POLLIN|POLLHUP (the HUP is the park's, not the program's). */
	m.all[1].revents = POLLIN;
	m.all[2].revents = POLLOUT;
	m.all[4].revents = POLLIN;
	m.all[5].revents = POLLIN | POLLHUP;
	m.all[3].revents = POLLPRI;
	r = shim_pollmerge_fold(&m, fds, 4);
	assert_int_equal(fds[0].revents, POLLIN);
	assert_int_equal(fds[1].revents, POLLIN);
	assert_int_equal(fds[2].revents, POLLOUT);
	assert_int_equal(fds[3].revents, POLLPRI | POLLIN);
	assert_int_equal(r, 4); /* the program's entries with revents, parks not counted */
	shim_pollmerge_free(&m);
}

/* A park's readiness other than POLLIN is not the listener's; a park not readable leaves
 * the entry as poll() gave it; the count is of the program's entries only. */
static void test_fold_bits_and_counts(void **state)
{
	struct pollfd fds[3] = {pfd(3, POLLIN), pfd(4, POLLIN), pfd(5, POLLIN)};
	static const int want[] = {103, 104};
	struct shim_pollmerge m;
	struct parks p;
	(void)state;

	parks_init(&p);
	p.park[3] = 103;
	p.park[4] = 104;
	assert_int_equal(shim_pollmerge_build(&m, fds, 3, lookup, &p), 5);
	assert_merged(&m, fds, 3, want, 2);
	m.all[3].revents = POLLERR | POLLHUP; /* park of 3: not readable */
	m.all[4].revents = 0;
	m.all[2].revents = POLLIN;
	fds[0].revents = POLLNVAL; /* stale bits from the program's last call go */
	assert_int_equal(shim_pollmerge_fold(&m, fds, 2), 1);
	assert_int_equal(fds[0].revents, 0);
	assert_int_equal(fds[1].revents, 0);
	assert_int_equal(fds[2].revents, POLLIN);

	/* the listener readable itself and through its park: one entry, counted once */
	m.all[0].revents = POLLIN;
	m.all[3].revents = POLLIN;
	m.all[2].revents = 0;
	assert_int_equal(shim_pollmerge_fold(&m, fds, 2), 1);
	assert_int_equal(fds[0].revents, POLLIN);

	/* poll() failed: its result stands and the program's array is untouched */
	fds[1].revents = POLLOUT;
	assert_int_equal(shim_pollmerge_fold(&m, fds, -1), -1);
	assert_int_equal(fds[1].revents, POLLOUT);
	shim_pollmerge_free(&m);
}

/* One listener in several entries: a park entry for each, each folded into its own entry. */
static void test_one_listener_several_entries(void **state)
{
	struct pollfd fds[4] = {pfd(6, POLLIN), pfd(2, POLLIN), pfd(6, POLLIN | POLLOUT), pfd(6, POLLOUT)};
	static const int want[] = {106, 106};
	struct shim_pollmerge m;
	struct parks p;
	(void)state;

	parks_init(&p);
	p.park[6] = 106;
	assert_int_equal(shim_pollmerge_build(&m, fds, 4, lookup, &p), 6);
	assert_merged(&m, fds, 4, want, 2);
	assert_int_equal(p.looks[6], 2); /* once per entry that asks for POLLIN */
	m.all[2].revents = POLLOUT;
	m.all[3].revents = POLLOUT;
	m.all[4].revents = POLLIN;
	m.all[5].revents = POLLIN;
	assert_int_equal(shim_pollmerge_fold(&m, fds, 4), 3);
	assert_int_equal(fds[0].revents, POLLIN);
	assert_int_equal(fds[1].revents, 0);
	assert_int_equal(fds[2].revents, POLLOUT | POLLIN);
	assert_int_equal(fds[3].revents, POLLOUT);
	shim_pollmerge_free(&m);
}

/* A lookup whose answer changes between calls: each entry is looked at once, and the merged
 * array and the fold follow that one answer. */
static void test_lookup_changes_between_calls(void **state)
{
	struct pollfd fds[4] = {pfd(10, POLLIN), pfd(11, POLLIN), pfd(12, POLLIN), pfd(13, POLLIN)};
	static const int want[] = {110, 112};
	struct shim_pollmerge m;
	struct parks p;
	(void)state;

	parks_init(&p);
	p.flip = 1;
	p.park[10] = 110;
	p.park[12] = 112;
	assert_int_equal(shim_pollmerge_build(&m, fds, 4, lookup, &p), 6);
	for (int fd = 10; fd <= 13; fd++)
		assert_int_equal(p.looks[fd], 1);
	assert_merged(&m, fds, 4, want, 2);
	m.all[4].revents = POLLIN; /* 110 */
	m.all[5].revents = POLLIN; /* 112 */
	assert_int_equal(shim_pollmerge_fold(&m, fds, 2), 2);
	assert_int_equal(fds[0].revents, POLLIN);
	assert_int_equal(fds[1].revents, 0);
	assert_int_equal(fds[2].revents, POLLIN);
	assert_int_equal(fds[3].revents, 0);
	for (int fd = 10; fd <= 13; fd++)
		assert_int_equal(p.looks[fd], 1); /* the fold looked at nothing */
	shim_pollmerge_free(&m);
}

/* More entries and parks than the stack holds (SHIM_POLLMERGE_STACK): all merged, in order. */
static void test_beyond_the_stack(void **state)
{
	enum { N = 3 * SHIM_POLLMERGE_STACK };
	struct pollfd fds[N];
	int want[N];
	nfds_t nwant = 0;
	struct shim_pollmerge m;
	struct parks p;
	int r;
	(void)state;

	parks_init(&p);
	for (int i = 0; i < N; i++) {
		fds[i] = pfd(i, POLLIN);
		if (i % 3 != 1) { /* two of three have a park: 128 hits, 320 entries */
			p.park[i] = 300 + i;
			want[nwant++] = 300 + i;
		}
	}
	assert_int_equal(shim_pollmerge_build(&m, fds, N, lookup, &p), N + nwant);
	assert_true(nwant > SHIM_POLLMERGE_STACK);
	assert_ptr_not_equal(m.all, m.all_stack);
	assert_ptr_not_equal(m.hit, m.hit_stack);
	assert_merged(&m, fds, N, want, nwant);
	for (nfds_t k = 0; k < nwant; k++)
		m.all[N + k].revents = (k % 2) ? POLLIN : 0;
	r = shim_pollmerge_fold(&m, fds, (int)(nwant / 2));
	assert_int_equal(r, (int)(nwant / 2));
	for (nfds_t k = 0; k < nwant; k++) {
		int fd = want[k] - 300;
		assert_int_equal(fds[fd].revents, (k % 2) ? POLLIN : 0);
	}
	shim_pollmerge_free(&m);

	/* exactly the stack's worth of hits: no allocation for them; the merged array, longer
	 * than the stack, is allocated */
	parks_init(&p);
	for (int i = 0; i < SHIM_POLLMERGE_STACK; i++)
		p.park[i] = 300 + i;
	assert_int_equal(shim_pollmerge_build(&m, fds, SHIM_POLLMERGE_STACK, lookup, &p),
			 2 * SHIM_POLLMERGE_STACK);
	assert_ptr_equal(m.hit, m.hit_stack);
	assert_ptr_not_equal(m.all, m.all_stack);
	shim_pollmerge_free(&m);
}

/* select(): each set fd below nfds looked at once, park fds added (nfds raised to cover
 * them), and after the call each readable park's bit moved to its listener with the count
 * corrected. */
static void test_select_merge(void **state)
{
	struct shim_selectmerge m;
	struct parks p;
	fd_set r, rr;
	size_t bytes = (20 + 63) / 64 * 8;
	(void)state;

	parks_init(&p);
	p.flip = 1;
	p.park[3] = 40; /* above nfds */
	p.park[5] = 8;
	p.park[6] = 9; /* not in the read set */
	FD_ZERO(&r);
	FD_SET(3, &r);
	FD_SET(4, &r);
	FD_SET(5, &r);
	FD_SET(19, &r);
	assert_int_equal(shim_selectmerge_build(&m, &r, 20, bytes, &rr, lookup, &p), 2);
	assert_int_equal(m.top, 41);
	assert_int_equal(p.looks[3] + p.looks[4] + p.looks[5] + p.looks[19], 4);
	assert_int_equal(p.looks[6], 0);
	for (int fd = 0; fd < 64; fd++)
		assert_int_equal(!!FD_ISSET(fd, &rr), fd == 3 || fd == 4 || fd == 5 || fd == 19 ||
							      fd == 40 || fd == 8);

	/* select() says: 40 (park of 3), 8 (park of 5) and 5 itself readable: 3 bits */
	FD_ZERO(&rr);
	FD_SET(40, &rr);
	FD_SET(8, &rr);
	FD_SET(5, &rr);
	assert_int_equal(shim_selectmerge_fold(&m, &rr, 3), 2);
	for (int fd = 0; fd < 64; fd++)
		assert_int_equal(!!FD_ISSET(fd, &rr), fd == 3 || fd == 5);
	/* errors and timeouts stand as they are */
	assert_int_equal(shim_selectmerge_fold(&m, &rr, 0), 0);
	assert_int_equal(shim_selectmerge_fold(&m, &rr, -1), -1);

	/* nothing parked among the set fds: nothing to merge */
	parks_init(&p);
	assert_int_equal(shim_selectmerge_build(&m, &r, 20, bytes, &rr, lookup, &p), 0);
}

/* More listeners with parks than select's merge takes: the first ones, in fd order. */
static void test_select_limit(void **state)
{
	struct shim_selectmerge m;
	struct parks p;
	fd_set r, rr;
	(void)state;

	parks_init(&p);
	FD_ZERO(&r);
	for (int fd = 0; fd < 40; fd++) {
		FD_SET(fd, &r);
		p.park[fd] = 100 + fd;
	}
	assert_int_equal(shim_selectmerge_build(&m, &r, 40, 8, &rr, lookup, &p), SHIM_SELECTMERGE_MAX);
	for (int i = 0; i < SHIM_SELECTMERGE_MAX; i++) {
		assert_int_equal(m.lfd[i], i);
		assert_int_equal(m.pfd[i], 100 + i);
	}
	assert_int_equal(p.looks[SHIM_SELECTMERGE_MAX], 0); /* no look past the limit */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_park),
		cmocka_unit_test(test_mixed),
		cmocka_unit_test(test_fold_bits_and_counts),
		cmocka_unit_test(test_one_listener_several_entries),
		cmocka_unit_test(test_lookup_changes_between_calls),
		cmocka_unit_test(test_beyond_the_stack),
		cmocka_unit_test(test_select_merge),
		cmocka_unit_test(test_select_limit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

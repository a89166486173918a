/* The core's per-fd table: no fixed limit on fd numbers, entries cleared singly
 * and by range (close_range), carried by dup, and walked by kind (exec handoff). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/conn.h"

/* An owner as parking is one (preload/park.c): an extension whose drop() the table calls when
 * an entry holding it goes. A listener's going releases it; a parked or internal fd's going
 * tells it it lost one. Count the calls. */
static int released, lost;
static void owner_drop(struct shim_ext *x, unsigned kind)
{
	(void)x;
	if (kind == SHIM_FD_LISTENER)
		released++;
	else
		lost++;
}
static const struct shim_ext_ops owner_ops = {.drop = owner_drop};
static struct shim_ext owner1 = {&owner_ops}, owner2 = {&owner_ops}, owner3 = {&owner_ops};

static struct shim_fd *conn(int fd, uint16_t port)
{
	struct shim_fd *e = shim_fd_get(fd);
	assert_non_null(e);
	e->flags = SHIM_C_REWRITTEN;
	e->peer.family = AF_INET;
	e->peer.port = port;
	e->real_hash = (uint32_t)fd * 7u;
	atomic_store(&e->kind, SHIM_FD_CONN);
	return e;
}

static void test_high_fd_numbers(void **state)
{
	static const int fds[] = {0, 3, 16383, 16384, 65535, 65536, 70000, 1048576, 0x3FFFFFFF, 0x7FFFFFFF};
	(void)state;
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		conn(fds[i], (uint16_t)(i + 1));
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		struct shim_fd *e = shim_fd_peek(fds[i]);
		assert_non_null(e);
		assert_int_equal(shim_fd_kind(fds[i]), SHIM_FD_CONN);
		assert_int_equal(e->peer.port, i + 1);
	}
	/* Neighbours of recorded fds are empty; negative fds have no entry. */
	assert_int_equal(shim_fd_kind(70001), SHIM_FD_NONE);
	assert_int_equal(shim_fd_kind(0x7FFFFFFE), SHIM_FD_NONE);
	assert_null(shim_fd_peek(-1));
	assert_null(shim_fd_get(-5));
	assert_int_equal(shim_fd_each(SHIM_FD_CONN, NULL, NULL), sizeof(fds) / sizeof(fds[0]));
	shim_fd_clear_range(0, ~0u);
	assert_int_equal(shim_fd_each(SHIM_FD_CONN, NULL, NULL), 0);
}

static void test_clear_range_bounds(void **state)
{
	(void)state;
	for (int fd = 60000; fd < 60010; fd++)
		conn(fd, 1);
	shim_fd_clear_range(60003, 60006);
	for (int fd = 60000; fd < 60010; fd++)
		assert_int_equal(shim_fd_kind(fd), (fd >= 60003 && fd <= 60006) ? SHIM_FD_NONE : SHIM_FD_CONN);
	shim_fd_clear_range(60000, 60009);
	assert_int_equal(shim_fd_each(SHIM_FD_CONN, NULL, NULL), 0);
}

static void test_copy_replaces_target(void **state)
{
	struct shim_fd *e;
	struct shim_tlvs *t;
	(void)state;
	conn(100, 4711);
	conn(200, 9);
	shim_fd_copy(100, 200);
	e = shim_fd_peek(200);
	assert_int_equal(shim_fd_kind(200), SHIM_FD_CONN);
	assert_int_equal(e->peer.port, 4711);
	assert_int_equal(e->real_hash, 700);
	/* Copying an fd the table does not know clears the target: dup2 over a rewritten fd. */
	shim_fd_copy(101, 200);
	assert_int_equal(shim_fd_kind(200), SHIM_FD_NONE);
	/* TLVs kept on a connection are shared by its copies, counted (dup allocates nothing),
	 * and outlive the entry that made them. */
	e = shim_fd_peek(100);
	t = shim_tlvs_new(3);
	assert_non_null(t);
	memcpy(t->data, "\x01\x00\x00", 3);
	e->ext = t;
	shim_fd_copy(100, 300);
	assert_ptr_equal(shim_fd_peek(300)->ext, t);
	assert_int_equal(atomic_load(&t->refs), 2);
	shim_fd_clear(100);
	assert_null(shim_fd_peek(100)->ext);
	assert_int_equal(atomic_load(&t->refs), 1);
	assert_memory_equal(((struct shim_tlvs *)shim_fd_peek(300)->ext)->data, "\x01\x00\x00", 3);
	/* A block on its way out (count zero: its last entry is being cleared) is not shared. */
	atomic_store(&t->refs, 0);
	shim_fd_copy(300, 301);
	assert_int_equal(shim_fd_kind(301), SHIM_FD_CONN);
	assert_null(shim_fd_peek(301)->ext);
	atomic_store(&t->refs, 1);
	shim_fd_clear(300);
	shim_fd_clear(301);
	assert_null(shim_fd_peek(300)->ext);
}

static void test_internal_and_listener_side_effects(void **state)
{
	struct shim_fd *l;
	(void)state;
	released = lost = 0;
	shim_fd_mark_owned(400, &owner1, SHIM_FD_INTERNAL);
	assert_int_equal(shim_fd_kind(400), SHIM_FD_INTERNAL);
	shim_fd_forget(400); /* the shim closing its own fd: no alarm */
	assert_int_equal(lost, 0);
	shim_fd_mark_owned(400, &owner1, SHIM_FD_INTERNAL);
	shim_fd_clear(400); /* the program closing it */
	assert_int_equal(lost, 1);
	/* A duplicate of the shim's own fd is the program's, not the shim's. */
	shim_fd_mark_owned(401, &owner1, SHIM_FD_INTERNAL);
	shim_fd_copy(401, 402);
	assert_int_equal(shim_fd_kind(402), SHIM_FD_NONE);
	l = shim_fd_get(500);
	l->ext = &owner2;
	atomic_store(&l->kind, SHIM_FD_LISTENER);
	shim_fd_clear_range(499, 501);
	assert_int_equal(released, 1);
	shim_fd_clear(401);
}

/* An entry of the given kind as the modules that own it leave it. */
struct kind_case {
	const char *name;
	uint8_t kind, flags;
	bool tlvs; /* conn: kept TLVs */
	void *ext; /* listener, parked, internal: their owner (counting its drops) */
};

static const struct kind_case kinds[] = {
	{"none", SHIM_FD_NONE, 0, false, NULL},
	{"listener", SHIM_FD_LISTENER, SHIM_L_COVERED, false, &owner2},
	{"listener, never parked", SHIM_FD_LISTENER, SHIM_L_COVERED, false, NULL},
	{"conn rewritten", SHIM_FD_CONN, SHIM_C_REWRITTEN, false, NULL},
	{"conn rewritten, TLVs", SHIM_FD_CONN, SHIM_C_REWRITTEN, true, NULL},
	{"conn pending", SHIM_FD_CONN, SHIM_C_PENDING, false, NULL},
	{"conn failed", SHIM_FD_CONN, SHIM_C_FAILED, false, NULL},
	{"internal", SHIM_FD_INTERNAL, 0, false, &owner1},
	{"epoll", SHIM_FD_EPOLL, 0, false, NULL},
	{"claimed", SHIM_FD_CLAIMED, 0, false, NULL},
	{"parked", SHIM_FD_PARKED, 0, false, &owner1},
};
#define NKINDS (sizeof(kinds) / sizeof(kinds[0]))

static void make_kind(int fd, const struct kind_case *k, uint16_t port)
{
	struct shim_fd *e = shim_fd_get(fd);
	assert_non_null(e);
	shim_fd_forget(fd); /* a fresh entry: no release of what a previous case left */
	if (k->kind == SHIM_FD_NONE)
		return;
	e->flags = k->flags;
	e->version = 2;
	e->command = 1;
	e->real_hash = 0x1000u + port;
	memset(&e->peer, 0, sizeof(e->peer));
	e->peer.family = AF_INET6;
	e->peer.port = port;
	e->peer.addr[15] = (uint8_t)port;
	if (k->flags & SHIM_C_PENDING) {
		shim_pend_set_deadline(e, 0x0123456789ull + port);
		e->pend.lport = (uint16_t)(port + 1);
	} else {
		memset(&e->local, 0, sizeof(e->local));
		e->local.family = AF_INET;
		e->local.port = (uint16_t)(port + 1);
	}
	if (k->tlvs) {
		struct shim_tlvs *t = shim_tlvs_new(4);
		assert_non_null(t);
		memcpy(t->data, "\x20\x00\x01\x07", 4);
		shim_fd_set_ext(e, t);
	} else {
		shim_fd_set_ext(e, k->ext);
	}
	atomic_store(&e->kind, k->kind);
}

/* The side effect clearing an entry of kind k has: 1 release (listener with a park), 1 lost fd
 * (internal with a park), none otherwise; TLVs are freed (ASan's leak check sees one that is
 * not). */
static void expect_clear_effect(const struct kind_case *k, int released0, int lost0)
{
	assert_int_equal(released - released0, k->kind == SHIM_FD_LISTENER && k->ext ? 1 : 0);
	assert_int_equal(lost - lost0, (k->kind == SHIM_FD_INTERNAL || k->kind == SHIM_FD_PARKED) && k->ext ? 1 : 0);
}

/* dup2(src, dst) for every kind of src over every kind of dst: connections and listeners are
 * carried (TLVs shared with a reference count, a listener without its park), the shim's own fds,
 * epoll marks and a listener being claimed are not; what dst held goes as a close would. */
static void test_copy_every_kind(void **state)
{
	(void)state;
	for (size_t i = 0; i < NKINDS; i++) {
		for (size_t j = 0; j < NKINDS; j++) {
			const struct kind_case *src = &kinds[i], *dst = &kinds[j];
			struct shim_fd before, *s, *d;
			int r0, l0;
			bool carried = src->kind == SHIM_FD_LISTENER || src->kind == SHIM_FD_CONN;

			print_message("  %s over %s\n", src->name, dst->name);
			make_kind(1000, src, (uint16_t)(100 + i));
			make_kind(1001, dst, (uint16_t)(200 + j));
			s = shim_fd_peek(1000);
			before = *s;
			r0 = released;
			l0 = lost;
			shim_fd_copy(1000, 1001);
			expect_clear_effect(dst, r0, l0);
			/* The source is as it was. */
			assert_int_equal(shim_fd_kind(1000), src->kind);
			assert_ptr_equal(shim_fd_ext(s), before.ext);
			d = shim_fd_peek(1001);
			assert_non_null(d);
			assert_int_equal(shim_fd_kind(1001), carried ? src->kind : SHIM_FD_NONE);
			if (!carried) {
				assert_null(shim_fd_ext(d));
			} else {
				assert_int_equal(d->flags, src->flags);
				assert_int_equal(d->version, before.version);
				assert_int_equal(d->command, before.command);
				assert_int_equal(d->real_hash, before.real_hash);
				assert_memory_equal(&d->peer, &before.peer, sizeof(d->peer));
				assert_memory_equal(&d->local, &before.local, sizeof(d->local));
				if (src->flags & SHIM_C_PENDING) {
					assert_true(shim_pend_deadline(d) == shim_pend_deadline(&before));
					assert_int_equal(d->pend.lport, before.pend.lport);
				}
				if (src->tlvs) {
					/* Shared, one more reference: dup() allocates nothing. */
					const struct shim_tlvs *t = shim_fd_ext(d);
					assert_ptr_equal(t, before.ext);
					assert_int_equal(atomic_load(&t->refs), 2);
					assert_int_equal(t->len, 4);
					assert_memory_equal(t->data, "\x20\x00\x01\x07", 4);
				} else {
					assert_null(shim_fd_ext(d)); /* a listener's park stays its own */
				}
			}
			/* Both go as a close would: each drops its reference to the TLVs, only
			 * the original listener releases its park. */
			r0 = released;
			l0 = lost;
			shim_fd_clear(1001);
			assert_int_equal(released, r0);
			assert_int_equal(lost, l0);
			shim_fd_clear(1000);
			expect_clear_effect(src, r0, l0);
			assert_int_equal(shim_fd_kind(1000), SHIM_FD_NONE);
			assert_null(shim_fd_ext(s));
		}
	}
}

/* dup2(fd, fd) is not a copy (dup.c leaves it alone), but copying an fd onto a number with no
 * page yet creates it; a negative target is ignored. */
static void test_copy_to_new_page(void **state)
{
	(void)state;
	make_kind(1002, &kinds[3], 7);
	assert_null(shim_fd_peek(40 * (int)PAGE_FDS + 3));
	shim_fd_copy(1002, 40 * (int)PAGE_FDS + 3);
	assert_int_equal(shim_fd_kind(40 * (int)PAGE_FDS + 3), SHIM_FD_CONN);
	assert_int_equal(shim_fd_peek(40 * (int)PAGE_FDS + 3)->peer.port, 7);
	shim_fd_copy(1002, -1);
	/* Copying from an fd whose page does not exist clears the target. */
	shim_fd_copy(41 * (int)PAGE_FDS, 40 * (int)PAGE_FDS + 3);
	assert_int_equal(shim_fd_kind(40 * (int)PAGE_FDS + 3), SHIM_FD_NONE);
	assert_null(shim_fd_peek(41 * (int)PAGE_FDS));
	shim_fd_clear(1002);
}

/* close_range() over page boundaries and over pages that were never made. */
static void test_clear_range_pages(void **state)
{
	const int p = (int)PAGE_FDS;
	(void)state;
	/* Across one boundary: [p-3, p+2] of p-5 .. p+4. */
	for (int fd = p - 5; fd < p + 5; fd++)
		conn(fd, 1);
	shim_fd_clear_range((unsigned)p - 3, (unsigned)p + 2);
	for (int fd = p - 5; fd < p + 5; fd++)
		assert_int_equal(shim_fd_kind(fd), (fd >= p - 3 && fd <= p + 2) ? SHIM_FD_NONE : SHIM_FD_CONN);
	shim_fd_clear_range((unsigned)p - 5, (unsigned)p + 4);
	/* Over missing pages: pages 100 and 103 exist, 101 and 102 never do. */
	for (int k = 0; k < 4; k++) {
		conn(100 * p + p - 4 + k, 2);
		conn(103 * p + k, 3);
	}
	assert_null(shim_fd_peek(101 * p));
	assert_null(shim_fd_peek(102 * p + 7));
	shim_fd_clear_range(100u * PAGE_FDS + PAGE_FDS - 3, 103u * PAGE_FDS + 1);
	assert_int_equal(shim_fd_kind(100 * p + p - 4), SHIM_FD_CONN);
	for (int k = 1; k < 4; k++)
		assert_int_equal(shim_fd_kind(100 * p + p - 4 + k), SHIM_FD_NONE);
	assert_int_equal(shim_fd_kind(103 * p), SHIM_FD_NONE);
	assert_int_equal(shim_fd_kind(103 * p + 1), SHIM_FD_NONE);
	assert_int_equal(shim_fd_kind(103 * p + 2), SHIM_FD_CONN);
	assert_int_equal(shim_fd_kind(103 * p + 3), SHIM_FD_CONN);
	/* The range did not make the pages it crossed. */
	assert_null(shim_fd_peek(101 * p));
	assert_null(shim_fd_peek(102 * p));
	/* A range that starts and ends inside missing pages, and one past every page. */
	shim_fd_clear_range(101u * PAGE_FDS + 5, 102u * PAGE_FDS + 5);
	assert_null(shim_fd_peek(101 * p));
	shim_fd_clear_range(0x7FFFFF00u, ~0u);
	assert_int_equal(shim_fd_kind(100 * p + p - 4), SHIM_FD_CONN);
	assert_int_equal(shim_fd_kind(103 * p + 3), SHIM_FD_CONN);
	/* first == last: one fd. */
	shim_fd_clear_range(103u * PAGE_FDS + 3, 103u * PAGE_FDS + 3);
	assert_int_equal(shim_fd_kind(103 * p + 3), SHIM_FD_NONE);
	assert_int_equal(shim_fd_kind(103 * p + 2), SHIM_FD_CONN);
	shim_fd_clear_range(0, ~0u);
	assert_int_equal(shim_fd_each(SHIM_FD_CONN, NULL, NULL), 0);
}

/* close_range() over every kind: each entry goes as its own close would. */
static void test_clear_range_every_kind(void **state)
{
	int r0 = released, l0 = lost;
	int want_r = 0, want_l = 0;
	(void)state;
	for (size_t i = 0; i < NKINDS; i++) {
		make_kind(2000 + (int)i, &kinds[i], (uint16_t)i);
		want_r += kinds[i].kind == SHIM_FD_LISTENER && kinds[i].ext;
		want_l += (kinds[i].kind == SHIM_FD_INTERNAL || kinds[i].kind == SHIM_FD_PARKED) && kinds[i].ext;
	}
	shim_fd_clear_range(2000, 2000 + NKINDS - 1);
	for (size_t i = 0; i < NKINDS; i++) {
		assert_int_equal(shim_fd_kind(2000 + (int)i), SHIM_FD_NONE);
		assert_null(shim_fd_ext(shim_fd_peek(2000 + (int)i)));
	}
	assert_int_equal(released - r0, want_r);
	assert_int_equal(lost - l0, want_l);
}

/* The shim taking an fd number for its own: what the number held goes first (a close the
 * program did not tell us about); forget() hands it back without a word to the park. */
static void test_mark_owned_and_forget(void **state)
{
	(void)state;
	for (size_t i = 0; i < NKINDS; i++) {
		int r0, l0;
		print_message("  internal over %s\n", kinds[i].name);
		make_kind(3000, &kinds[i], 9);
		r0 = released;
		l0 = lost;
		shim_fd_mark_owned(3000, &owner3, SHIM_FD_INTERNAL);
		expect_clear_effect(&kinds[i], r0, l0);
		assert_int_equal(shim_fd_kind(3000), SHIM_FD_INTERNAL);
		assert_ptr_equal(shim_fd_ext(shim_fd_peek(3000)), &owner3);
		r0 = released;
		l0 = lost;
		shim_fd_forget(3000);
		assert_int_equal(released, r0);
		assert_int_equal(lost, l0);
		assert_int_equal(shim_fd_kind(3000), SHIM_FD_NONE);
		assert_null(shim_fd_ext(shim_fd_peek(3000)));
	}
	/* forget() on a number the table never saw, and on a negative one. */
	assert_null(shim_fd_peek(60 * (int)PAGE_FDS));
	shim_fd_forget(60 * (int)PAGE_FDS);
	shim_fd_forget(-1);
	assert_null(shim_fd_peek(60 * (int)PAGE_FDS));
	/* mark_owned on a negative fd does nothing. */
	shim_fd_mark_owned(-2, &owner3, SHIM_FD_INTERNAL);
}

struct walk {
	size_t n;
	int fds[8];
};

static void walk_fn(int fd, struct shim_fd *e, void *arg)
{
	struct walk *w = arg;
	assert_ptr_equal(e, shim_fd_peek(fd));
	assert_true(w->n < 8);
	w->fds[w->n++] = fd;
}

/* each() finds exactly the entries of one kind, in fd order, across pages. */
static void test_each_by_kind(void **state)
{
	struct walk w = {0};
	(void)state;
	shim_fd_clear_range(0, ~0u);
	make_kind(5, &kinds[3], 1);
	make_kind(6, &kinds[1], 1);
	make_kind(7, &kinds[5], 1);
	make_kind(3 * (int)PAGE_FDS + 1, &kinds[6], 1);
	make_kind(3 * (int)PAGE_FDS + 2, &kinds[9], 1);
	assert_int_equal(shim_fd_each(SHIM_FD_CONN, walk_fn, &w), 3);
	assert_int_equal(w.n, 3);
	assert_int_equal(w.fds[0], 5);
	assert_int_equal(w.fds[1], 7);
	assert_int_equal(w.fds[2], 3 * (int)PAGE_FDS + 1);
	assert_int_equal(shim_fd_each(SHIM_FD_LISTENER, NULL, NULL), 1);
	assert_int_equal(shim_fd_each(SHIM_FD_CLAIMED, NULL, NULL), 1);
	assert_int_equal(shim_fd_each(SHIM_FD_EPOLL, NULL, NULL), 0);
	shim_fd_forget(6); /* the fake park of kinds[1] is not released */
	shim_fd_clear_range(0, ~0u);
	assert_int_equal(shim_fd_each(SHIM_FD_CONN, NULL, NULL), 0);
	assert_int_equal(shim_fd_each(SHIM_FD_CLAIMED, NULL, NULL), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_high_fd_numbers),
		cmocka_unit_test(test_clear_range_bounds),
		cmocka_unit_test(test_copy_replaces_target),
		cmocka_unit_test(test_internal_and_listener_side_effects),
		cmocka_unit_test(test_copy_every_kind),
		cmocka_unit_test(test_copy_to_new_page),
		cmocka_unit_test(test_clear_range_pages),
		cmocka_unit_test(test_clear_range_every_kind),
		cmocka_unit_test(test_mark_owned_and_forget),
		cmocka_unit_test(test_each_by_kind),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The preload library's per-fd table: no fixed limit on fd numbers, entries cleared singly
 * and by range (close_range), carried by dup, and walked by kind (exec handoff). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "preload/shim.h"

/* The table tells the parking code when a listener or one of its fds goes; count the calls. */
static int released, lost;
void shim_park_release(struct shim_park *p)
{
	(void)p;
	released++;
}
void shim_park_lost_fd(struct shim_park *p)
{
	(void)p;
	lost++;
}

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
	shim_fd_mark_internal(400, (void *)0x1);
	assert_int_equal(shim_fd_kind(400), SHIM_FD_INTERNAL);
	shim_fd_forget(400); /* the shim closing its own fd: no alarm */
	assert_int_equal(lost, 0);
	shim_fd_mark_internal(400, (void *)0x1);
	shim_fd_clear(400); /* the program closing it */
	assert_int_equal(lost, 1);
	/* A duplicate of the shim's own fd is the program's, not the shim's. */
	shim_fd_mark_internal(401, (void *)0x1);
	shim_fd_copy(401, 402);
	assert_int_equal(shim_fd_kind(402), SHIM_FD_NONE);
	l = shim_fd_get(500);
	l->ext = (void *)0x2;
	atomic_store(&l->kind, SHIM_FD_LISTENER);
	shim_fd_clear_range(499, 501);
	assert_int_equal(released, 1);
	shim_fd_clear(401);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_high_fd_numbers),
		cmocka_unit_test(test_clear_range_bounds),
		cmocka_unit_test(test_copy_replaces_target),
		cmocka_unit_test(test_internal_and_listener_side_effects),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

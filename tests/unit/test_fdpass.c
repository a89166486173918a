/* The table of connections passed between processes (core/fdpass.c), in a directory of the
 * test's own instead of /dev/shm: who may use a file, publishing and looking up, a pending
 * header claimed by one process at a time (real processes, fork), a claimer that died, and a
 * table that fills up. The mapping is per process and stays: the tests of files that must not
 * be used run first, each in a child. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/fdpass.h"

static char g_dir[] = "/tmp/test_fdpass.XXXXXX";
static char g_path[300];

static int setup_dir(void **state)
{
	(void)state;
	if (!mkdtemp(g_dir))
		return -1;
	shim_fdpass_dir = g_dir;
	snprintf(g_path, sizeof(g_path), "%s/proxyshim-fd-%u", g_dir, (unsigned)geteuid());
	return 0;
}

static int teardown_dir(void **state)
{
	(void)state;
	unlink(g_path);
	rmdir(g_dir);
	return 0;
}

/* Runs fn in a child (its result is the exit status): the parent's mapping stays untouched. */
static int in_child(int (*fn)(void))
{
	int status;
	pid_t pid = fork();
	if (pid == 0)
		_exit(fn());
	waitpid(pid, &status, 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 99;
}

/* A file the layout expects (header of core/fdpass.c), with the given mode and magic. */
static void write_table(mode_t mode, uint64_t magic)
{
	struct {
		uint64_t magic;
		uint32_t layout, slots, slot_size;
	} h = {magic, 1, SHIM_FDPASS_SLOTS, 128};
	int fd = open(g_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, &h, sizeof(h)), sizeof(h));
	assert_int_equal(ftruncate(fd, 128 + (off_t)SHIM_FDPASS_SLOTS * 128), 0);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static int child_map_nocreate(void)
{
	return shim_fdpass_map(false) ? 1 : 0;
}

static void test_no_file_nothing_made_without_create(void **state)
{
	(void)state;
	assert_int_equal(in_child(child_map_nocreate), 0);
	assert_int_equal(access(g_path, F_OK), -1); /* a receiver never creates it */
}

static void test_file_readable_by_others_is_not_used(void **state)
{
	(void)state;
	write_table(0644, 0x7073666470617373ull);
	assert_int_equal(in_child(child_map_nocreate), 0);
	write_table(0600, 0x7073666470617373ull); /* the same file, private: used */
	assert_int_equal(in_child(child_map_nocreate), 1);
	unlink(g_path);
}

static void test_other_layout_is_not_used(void **state)
{
	(void)state;
	write_table(0600, 0x1234);
	assert_int_equal(in_child(child_map_nocreate), 0);
	unlink(g_path);
}

static int child_map_create_in_missing_dir(void)
{
	shim_fdpass_dir = "/nonexistent/proxyshim-test";
	return shim_fdpass_map(true) ? 1 : 0;
}

static void test_no_directory_no_table(void **state)
{
	(void)state;
	/* Said once as event=fdpass reason=create; the connection keeps working without it. */
	assert_int_equal(in_child(child_map_create_in_missing_dir), 0);
}

static void test_create_makes_a_private_table(void **state)
{
	struct stat st;
	(void)state;
	assert_false(shim_fdpass_mapped());
	assert_true(shim_fdpass_map(true));
	assert_true(shim_fdpass_mapped());
	assert_int_equal(stat(g_path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(st.st_uid, geteuid());
}

static struct shim_fd rewritten(uint8_t last)
{
	struct shim_fd e;
	memset(&e, 0, sizeof(e));
	e.flags = SHIM_C_REWRITTEN;
	e.version = 2;
	e.command = 1;
	e.real_hash = 0xabcdef01u;
	e.peer.family = AF_INET;
	e.peer.port = htons(40000);
	e.peer.addr[0] = 203, e.peer.addr[1] = 0, e.peer.addr[2] = 113, e.peer.addr[3] = last;
	return e;
}

static struct shim_fd pending(void)
{
	struct shim_fd e;
	memset(&e, 0, sizeof(e));
	e.flags = SHIM_C_PENDING | SHIM_C_SHARED;
	e.real_hash = 0x55u;
	shim_pend_set_deadline(&e, 123456789);
	e.pend.lport = 8080;
	return e;
}

static void test_publish_then_lookup(void **state)
{
	struct shim_fd e = rewritten(70);
	struct shim_handoff_wire w;
	uint32_t st;
	(void)state;
	assert_int_equal(shim_fdpass_lookup(1001, &w, &st), -ENOENT);
	assert_int_equal(shim_fdpass_publish(1001, &e), 0);
	assert_int_equal(shim_fdpass_lookup(1001, &w, &st), 0);
	assert_int_equal(st, SHIM_FDPASS_SETTLED);
	assert_int_equal(w.flags, SHIM_C_REWRITTEN);
	assert_int_equal(w.real_hash, e.real_hash);
	assert_memory_equal(&w.peer, &e.peer, sizeof(e.peer));
	assert_int_equal(shim_fdpass_lookup(1002, &w, &st), -ENOENT);
}

static void test_pending_keeps_its_deadline_and_never_overwrites_a_result(void **state)
{
	struct shim_fd p = pending(), e = rewritten(71), got;
	struct shim_handoff_wire w;
	uint32_t st;
	(void)state;
	assert_int_equal(shim_fdpass_publish(2001, &p), 0);
	assert_int_equal(shim_fdpass_lookup(2001, &w, &st), 0);
	assert_int_equal(st, SHIM_FDPASS_PENDING);
	assert_int_equal(w.flags, SHIM_C_PENDING); /* SHARED is each process's own */
	memset(&got, 0, sizeof(got));
	got.local = w.local;
	assert_int_equal(shim_pend_deadline(&got), 123456789);
	assert_int_equal(got.pend.lport, 8080);
	/* Settled elsewhere, then a process still holding it pending passes it again. */
	shim_fdpass_settled(2001, &e);
	assert_int_equal(shim_fdpass_publish(2001, &p), 0);
	assert_int_equal(shim_fdpass_lookup(2001, &w, &st), 0);
	assert_int_equal(st, SHIM_FDPASS_SETTLED);
	assert_int_equal(w.flags, SHIM_C_REWRITTEN);
}

/* ---- one claimer at a time, across processes ---- */

static int child_claims_and_waits(int go, int done, uint64_t cookie, bool settle)
{
	char c;
	struct shim_fd e = rewritten(72);
	if (shim_fdpass_claim(cookie) != 0)
		return 1;
	if (write(done, "c", 1) != 1 || read(go, &c, 1) != 1)
		return 2;
	if (settle)
		shim_fdpass_settled(cookie, &e);
	return 0; /* without settling: dies holding the claim */
}

static void claim_race(uint64_t cookie, bool settle)
{
	int go[2], done[2], status;
	struct shim_fd p = pending();
	char c;
	pid_t pid;

	assert_int_equal(shim_fdpass_publish(cookie, &p), 0);
	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(done), 0);
	pid = fork();
	if (pid == 0)
		_exit(child_claims_and_waits(go[0], done[1], cookie, settle));
	assert_int_equal(read(done[0], &c, 1), 1);
	/* The child reads the header now: this process may not. */
	assert_int_equal(shim_fdpass_claim(cookie), -EBUSY);
	assert_int_equal(write(go[1], "g", 1), 1);
	waitpid(pid, &status, 0);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(go[0]), close(go[1]), close(done[0]), close(done[1]);
}

static void test_claim_is_one_process_at_a_time(void **state)
{
	struct shim_handoff_wire w;
	uint32_t st;
	(void)state;
	claim_race(3001, true);
	/* The child wrote its result: this process copies it, it does not read. */
	assert_int_equal(shim_fdpass_claim(3001), -EALREADY);
	assert_int_equal(shim_fdpass_lookup(3001, &w, &st), 0);
	assert_int_equal(st, SHIM_FDPASS_SETTLED);
	assert_int_equal(w.flags, SHIM_C_REWRITTEN);
	assert_int_equal(w.peer.addr[3], 72);
}

static void test_a_dead_claimers_header_is_taken_over(void **state)
{
	struct shim_handoff_wire w;
	uint32_t st;
	(void)state;
	claim_race(3002, false);
	assert_int_equal(shim_fdpass_claim(3002), 0);
	/* Given back unread (incomplete, non-blocking): pending again. */
	shim_fdpass_release(3002);
	assert_int_equal(shim_fdpass_lookup(3002, &w, &st), 0);
	assert_int_equal(st, SHIM_FDPASS_PENDING);
	/* Settled with no state (LOCAL): the slot says so, flags 0. */
	assert_int_equal(shim_fdpass_claim(3002), 0);
	shim_fdpass_settled(3002, NULL);
	assert_int_equal(shim_fdpass_lookup(3002, &w, &st), 0);
	assert_int_equal(st, SHIM_FDPASS_SETTLED);
	assert_int_equal(w.flags, 0);
}

static void test_a_full_table_takes_old_slots(void **state)
{
	struct shim_fd e = rewritten(73);
	struct shim_handoff_wire w;
	uint32_t st;
	unsigned n = 3 * SHIM_FDPASS_SLOTS, found = 0;
	(void)state;
	/* Three times as many connections as slots: every one is published and found right
	 * after, as a receiver looks it up right after the pass. */
	for (unsigned i = 0; i < n; i++) {
		uint64_t cookie = 1000000 + i;
		assert_int_equal(shim_fdpass_publish(cookie, &e), 0);
		assert_int_equal(shim_fdpass_lookup(cookie, &w, &st), 0);
	}
	for (unsigned i = 0; i < n; i++)
		found += shim_fdpass_lookup(1000000 + i, &w, &st) == 0;
	assert_true(found <= SHIM_FDPASS_SLOTS);
	assert_true(found > SHIM_FDPASS_SLOTS / 2);
}

static void test_cookie_of_a_socket_and_of_a_pipe(void **state)
{
	uint64_t a = 0, b = 0;
	int sv[2], p[2];
	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(shim_fdpass_cookie(sv[0], &a), 0);
	assert_int_equal(shim_fdpass_cookie(sv[1], &b), 0);
	assert_true(a != 0 && b != 0 && a != b);
	assert_int_equal(pipe(p), 0);
	assert_int_equal(shim_fdpass_cookie(p[0], &a), -ENOTSOCK);
	close(sv[0]), close(sv[1]), close(p[0]), close(p[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_file_nothing_made_without_create),
		cmocka_unit_test(test_file_readable_by_others_is_not_used),
		cmocka_unit_test(test_other_layout_is_not_used),
		cmocka_unit_test(test_no_directory_no_table),
		cmocka_unit_test(test_create_makes_a_private_table),
		cmocka_unit_test(test_publish_then_lookup),
		cmocka_unit_test(test_pending_keeps_its_deadline_and_never_overwrites_a_result),
		cmocka_unit_test(test_claim_is_one_process_at_a_time),
		cmocka_unit_test(test_a_dead_claimers_header_is_taken_over),
		cmocka_unit_test(test_a_full_table_takes_old_slots),
		cmocka_unit_test(test_cookie_of_a_socket_and_of_a_pipe),
	};
	return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}

"""Races between threads inside the shim (docs/RELIABILITY.md), each driven by a small C program
(tests/e2e/progs/) that makes the window wide and run for a bounded time, under the ASan+UBSan
build of the library where an overflow is a report instead of silent corruption."""
import os
import re
import subprocess

from util import BUILD, LIB, shim_env

ASAN_LIB = os.path.join(BUILD, "asan", "libproxyshim.so")
POLLRACE = os.path.join(BUILD, "progs", "pollrace")
STARTRACE = os.path.join(BUILD, "progs", "startrace")
STARTRACE_LIB = os.path.join(BUILD, "faults", "libstartrace.so")
START_RUNS = 300


def asan_env(logdir, **vars):
    """The shim's ASan build after gcc's runtime; reports to files <logdir>/asan.<pid>."""
    env = shim_env(**vars)
    runtime = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                             text=True, check=True).stdout.strip()
    env["LD_PRELOAD"] = runtime + " " + ASAN_LIB
    log = os.path.join(str(logdir), "asan")
    env["ASAN_OPTIONS"] = "detect_leaks=0:halt_on_error=1:log_path=" + log
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1:log_path=" + log
    return env


def asan_reports(logdir):
    text = ""
    for f in sorted(os.listdir(str(logdir))):
        if f.startswith("asan."):
            with open(os.path.join(str(logdir), f), errors="replace") as fh:
                text += fh.read()
    return text


def counts(line):
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def test_poll_merge_while_other_threads_park_and_complete(tmp_path):
    """poll() with 200 entries of one listener whose park empties and fills while the shim
    builds the merged array: the array must hold exactly the entries it was sized for, and the
    answer must count only the caller's entries."""
    assert os.path.exists(ASAN_LIB), "build it: make %s" % ASAN_LIB
    r = subprocess.run([POLLRACE, "4", "200"], env=asan_env(tmp_path, TRUSTED="127.0.0.1"),
                       capture_output=True, text=True, timeout=60)
    reports = asan_reports(tmp_path) + r.stderr
    assert "Sanitizer" not in reports and "runtime error" not in reports, reports[:4000]
    assert r.returncode == 0, "exit %d\n%s%s" % (r.returncode, r.stdout, r.stderr[:4000])
    c = counts(r.stdout)
    print(r.stdout.strip())
    # The race was really run: connections parked and handed over, polls answered.
    assert c["conns"] >= 200 and c["rewritten"] == c["conns"], r.stdout
    assert c["polls"] >= 1000 and c["ready"] > 0 and c["wrong"] == 0, r.stdout


def run_many(argv, env, runs):
    """Runs argv `runs` times; the exit statuses that were not 0, with the first stderr seen."""
    failed, first = {}, ""
    for _ in range(runs):
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            failed[r.returncode] = failed.get(r.returncode, 0) + 1
            first = first or r.stderr
    return failed, first


def test_first_hook_calls_from_many_threads_at_once():
    """16 threads, released together, each making the process's first call to a different
    hook (accept4 on a covered listener with headers queued, accept, fcntl64, close, poll, read,
    dup ...): every hook must find every real function it uses, in every run."""
    failed, err = run_many([STARTRACE], shim_env(TRUSTED="127.0.0.1"), START_RUNS)
    assert not failed, "exit statuses (negative: signal) -> runs, of %d: %r\n%s" % (START_RUNS, failed, err)


def test_first_hook_calls_before_the_shims_constructor():
    """The same race in the constructor of a library preloaded after the shim, which glibc
    initializes before the shim's (checked by the library: the shim's constructor unsets
    PROXYSHIM_HANDOFF): the hooks' own lookup on first use, with no constructor's help."""
    env = shim_env(TRUSTED="127.0.0.1", HANDOFF="probe")
    env["LD_PRELOAD"] = LIB + " " + STARTRACE_LIB
    failed, err = run_many(["/bin/true"], env, START_RUNS)
    assert 4 not in failed, "the shim's constructor ran before the library's: " + err
    assert not failed, "exit statuses (negative: signal) -> runs, of %d: %r\n%s" % (START_RUNS, failed, err)


TSAN_LIB = os.path.join(BUILD, "tsan", "libproxyshim.so")
TSAN_RUNS = 30


def test_threads_classifying_one_inherited_listener_at_once_under_tsan():
    """The listener of startrace is made listening behind the shim's back, so the threads'
    first accept() calls classify it, several at once. Each used to write the entry's flags
    (0, then covered) while another may already read the entry as a listener: a covered
    listener seen as uncovered for a moment, and a header handed to the program as data.
    Under the TSan build every run must be free of reports."""
    runtime = subprocess.run(["gcc", "-print-file-name=libtsan.so"], capture_output=True, text=True,
                             check=True).stdout.strip()
    env = shim_env(TRUSTED="127.0.0.1")
    env["LD_PRELOAD"] = runtime + " " + TSAN_LIB
    env["TSAN_OPTIONS"] = "halt_on_error=1 exitcode=66"
    failed, err = run_many([STARTRACE], env, TSAN_RUNS)
    assert not failed, "exit statuses -> runs, of %d: %r\n%s" % (TSAN_RUNS, failed, err[:3000])

"""The wrapper, build/proxyshim: the environment it gives COMMAND, --check through the library's
own validator, the library lookup, refusing static and foreign programs, warning for set-uid
ones, exit statuses, and real servers started through it."""
import os
import re
import shutil
import struct
import subprocess
import time

import pytest

from util import (LIB, ROOT, SEND, WRAPPER, Proc, exchange, free_port, start_testserver, v1_header,
                  v2_header, wait_conns, wait_port)
from test_preload_accept import PAYLOAD, SRC4, TRUSTED, UNTRUSTED, check_line

LIBREAL = os.path.realpath(LIB)


def run(*args, env=None, **kw):
    return subprocess.run([WRAPPER] + [str(a) for a in args], env=env, capture_output=True,
                          timeout=20, **kw)


def clean_env(**extra):
    """The environment without any LD_PRELOAD or PROXYSHIM_* of the caller's."""
    env = {k: v for k, v in os.environ.items()
           if k != "LD_PRELOAD" and not k.startswith("PROXYSHIM_")}
    env.update(extra)
    return env


def env_of(r):
    """The NAME=value lines `env` printed, as a dict."""
    assert r.returncode == 0, r
    return dict(l.split("=", 1) for l in r.stdout.decode().splitlines() if "=" in l)


def one_line(r):
    err = r.stderr.decode()
    assert err.count("\n") == 1 and err.endswith("\n") and err.startswith("proxyshim: "), repr(err)
    return err


# ---- the environment COMMAND gets ----

def test_every_option_sets_its_variable():
    r = run("--trusted", "10.0.0.0/8, ::1", "--protocol", "v2", "--mode", "optional",
            "--ports", "443,8000-8099", "--timeout-ms", "2500", "--consume", "lazy",
            "--lazy-grace", "400", "--log", "debug", "--stats", "/tmp/x.prom", "--", "env",
            env=clean_env())
    e = env_of(r)
    assert e["LD_PRELOAD"] == LIBREAL
    got = {k: v for k, v in e.items() if k.startswith("PROXYSHIM_")}
    assert got == {"PROXYSHIM_TRUSTED": "10.0.0.0/8, ::1", "PROXYSHIM_VERSION": "v2",
                   "PROXYSHIM_MODE": "optional", "PROXYSHIM_PORTS": "443,8000-8099",
                   "PROXYSHIM_TIMEOUT_MS": "2500", "PROXYSHIM_CONSUME": "lazy",
                   "PROXYSHIM_LAZY_GRACE_MS": "400", "PROXYSHIM_LOG": "debug",
                   "PROXYSHIM_STATS": "/tmp/x.prom"}
    # --log debug: env's stderr has the library's start line, nothing else
    assert [l for l in r.stderr.decode().splitlines() if "event=start" not in l] == [], r


def test_equals_form_and_command_without_double_dash():
    e = env_of(run("--trusted=127.0.0.2", "--log=off", "env", env=clean_env()))
    assert (e["PROXYSHIM_TRUSTED"], e["PROXYSHIM_LOG"]) == ("127.0.0.2", "off")
    assert "PROXYSHIM_MODE" not in e


def test_variables_not_given_pass_through_and_options_override():
    e = env_of(run("--mode", "strict", "--", "env",
                   env=clean_env(PROXYSHIM_MODE="optional", PROXYSHIM_MAX_PARKED="7",
                                 PROXYSHIM_TRUSTED="192.0.2.1")))
    assert (e["PROXYSHIM_MODE"], e["PROXYSHIM_MAX_PARKED"], e["PROXYSHIM_TRUSTED"]) == \
        ("strict", "7", "192.0.2.1")


@pytest.mark.parametrize("old,new", [
    ("/opt/a/liba.so", "{lib} /opt/a/liba.so"),
    ("/opt/a/liba.so:/opt/b/libb.so", "{lib} /opt/a/liba.so /opt/b/libb.so"),
    ("/opt/a/liba.so {lib}", "{lib} /opt/a/liba.so"),  # its own copy moves to the front
    ("", "{lib}"),
])
def test_ld_preload_is_prepended(tmp_path, old, new):
    # The other libraries must exist, or the dynamic linker complains into stderr.
    old = old.replace("/opt/a", str(tmp_path)).replace("/opt/b", str(tmp_path))
    for name in ("liba.so", "libb.so"):
        shutil.copy(LIB, tmp_path / name)
    old = old.format(lib=LIBREAL)
    r = run("--", "env", env=clean_env(LD_PRELOAD=old))
    assert env_of(r)["LD_PRELOAD"] == new.replace("/opt/a", str(tmp_path)).replace(
        "/opt/b", str(tmp_path)).format(lib=LIBREAL)


def test_exit_status_and_arguments_of_command_pass_through():
    r = run("--", "sh", "-c", 'printf "%s|" "$@"; exit 7', "sh", "a b", "", "--trusted",
            env=clean_env())
    assert r.returncode == 7
    assert r.stdout == b"a b||--trusted|"


def test_script_gets_the_preload(tmp_path):
    script = tmp_path / "s.sh"
    script.write_text('#!/bin/sh\necho "preload=$LD_PRELOAD trusted=$PROXYSHIM_TRUSTED"\n')
    script.chmod(0o755)
    r = run("--trusted", "127.0.0.2", "--", str(script), env=clean_env())
    assert r.returncode == 0, r
    assert r.stdout.decode() == "preload=%s trusted=127.0.0.2\n" % LIBREAL


def test_relative_command_with_slash(tmp_path):
    script = tmp_path / "s.sh"
    script.write_text('#!/bin/sh\necho ran\n')
    script.chmod(0o755)
    r = subprocess.run([WRAPPER, "--", "./s.sh"], cwd=tmp_path, env=clean_env(),
                       capture_output=True, timeout=10)
    assert (r.returncode, r.stdout) == (0, b"ran\n"), r


# ---- servers started through it ----

@pytest.mark.parametrize("version", [1, 2])
def test_testserver_through_the_wrapper(procs, version):
    p, port = start_testserver(env=clean_env(), prefix=[WRAPPER, "--trusted", TRUSTED, "--"])
    procs.append(p)
    hdr = (v1_header if version == 1 else v2_header)(SRC4, ("127.0.0.1", port))
    got, _ = exchange(port, hdr + PAYLOAD, source=TRUSTED)
    assert got == PAYLOAD
    got, me = exchange(port, hdr + PAYLOAD, source=UNTRUSTED)
    assert got == hdr + PAYLOAD
    first, second = wait_conns(p, 2)
    check_line(first, "AF_INET", SRC4[0], SRC4[1], PAYLOAD)
    check_line(second, "AF_INET", UNTRUSTED, me[1], hdr + PAYLOAD)


def test_http_server_logs_the_client_through_the_wrapper(procs, tmp_path):
    port = free_port()
    p = Proc([WRAPPER, "--trusted", "127.0.0.1", "--protocol", "v2", "--", "python3", "-m",
              "http.server", "--bind", "127.0.0.1", "--directory", str(tmp_path), str(port)],
             env=clean_env(), log_name="http")
    procs.append(p)
    wait_port(port, proc=p)  # a connection without a header: closed by the shim, as it should
    r = subprocess.run([SEND, "--src", "203.0.113.7:4711", "127.0.0.1", str(port)],
                       input=b"GET / HTTP/1.0\r\n\r\n", capture_output=True, timeout=10)
    assert r.returncode == 0 and r.stdout.startswith(b"HTTP/1.0 200"), r
    out = p.wait_output('"GET / HTTP/1.0" 200')
    lines = [l for l in out.splitlines() if '"GET / HTTP/1.0"' in l]
    assert len(lines) == 1 and lines[0].startswith("203.0.113.7 - - ["), out


# ---- --check ----

def check_lines(r, status=0):
    assert r.returncode == status, r
    lines = r.stdout.decode().splitlines()
    assert lines[0] == "library=" + LIBREAL
    return dict(l.split("=", 1) for l in lines[1:])


def test_check_prints_the_effective_settings():
    r = run("--trusted", "10.0.0.0/8 ::1, 192.0.2.9", "--protocol", "v1", "--mode", "optional",
            "--ports", "8000-8099,443", "--timeout-ms", "2500", "--consume", "lazy",
            "--lazy-grace", "0", "--log", "debug", "--stats", "/run/p.prom", "--check",
            env=clean_env())
    s = check_lines(r)
    assert s["active"] == "yes"
    assert s["PROXYSHIM_TRUSTED"] == "10.0.0.0/8,::1/128,192.0.2.9/32"
    assert s["PROXYSHIM_VERSION"] == "v1"
    assert s["PROXYSHIM_MODE"] == "optional"
    assert s["PROXYSHIM_PORTS"] == "443,8000-8099"
    assert s["PROXYSHIM_TIMEOUT_MS"] == "2500"
    assert s["PROXYSHIM_LOG"] == "debug"
    assert s["PROXYSHIM_CONSUME"] == "lazy"
    assert s["PROXYSHIM_LAZY_GRACE_MS"] == "0"
    assert s["PROXYSHIM_STATS"] == "/run/p.prom"
    assert s["PROXYSHIM_MAX_PARKED"] == "1024"  # the default, from the library
    # --log debug: the library's start line (the library is loaded to check), nothing else
    assert [l for l in r.stderr.decode().splitlines() if "event=start" not in l] == [], r


def test_check_without_trusted_says_inactive_and_fails():
    """A shim that would do nothing is a failed check: exit 1 and the reason on stderr, the
    settings still printed."""
    r = run("--check", env=clean_env())
    s = check_lines(r, status=1)
    assert s["active"] == "no reason=PROXYSHIM_TRUSTED is not set"
    assert (s["PROXYSHIM_MODE"], s["PROXYSHIM_VERSION"], s["PROXYSHIM_TIMEOUT_MS"]) == \
        ("strict", "any", "1000")
    assert one_line(r) == "proxyshim: the shim would be inactive: PROXYSHIM_TRUSTED is not set\n"


def test_check_with_an_empty_config_file_and_no_trusted_fails(tmp_path):
    conf = tmp_path / "proxyshim.conf"
    conf.write_text("# nothing trusted yet\nPROXYSHIM_MODE=optional\n")
    r = run("--config", conf, "--check", env=clean_env())
    s = check_lines(r, status=1)
    assert (s["PROXYSHIM_MODE"], s["config_file"]) == ("optional", str(conf))
    assert "would be inactive: PROXYSHIM_TRUSTED is not set" in one_line(r)


def test_check_active_exits_0():
    r = run("--trusted", "127.0.0.1", "--check", env=clean_env())
    assert check_lines(r)["active"] == "yes"
    assert r.stderr == b""


def test_check_sees_variables_from_the_environment():
    s = check_lines(run("--check", env=clean_env(PROXYSHIM_TRUSTED="*", PROXYSHIM_MAX_PARKED="9")))
    assert (s["PROXYSHIM_TRUSTED"], s["PROXYSHIM_MAX_PARKED"]) == ("*", "9")


def test_check_when_the_library_is_already_preloaded():
    """Preloaded (LD_PRELOAD or /etc/ld.so.preload), the library froze its configuration before
    the options were set: --check must still report the options."""
    r = run("--trusted", "10.9.0.0/16", "--mode", "optional", "--check",
            env=clean_env(LD_PRELOAD=LIB, PROXYSHIM_TRUSTED="192.0.2.1"))
    s = check_lines(r)
    assert (s["PROXYSHIM_TRUSTED"], s["PROXYSHIM_MODE"]) == ("10.9.0.0/16", "optional")
    assert "PROXYSHIM_CHECK_REEXEC" not in r.stdout.decode()


BAD = [
    ("--trusted", "10.0.0.0/33", "PROXYSHIM_TRUSTED"),
    ("--trusted", "", "PROXYSHIM_TRUSTED"),
    ("--protocol", "v3", "PROXYSHIM_VERSION"),
    ("--mode", "lenient", "PROXYSHIM_MODE"),
    ("--ports", "0", "PROXYSHIM_PORTS"),
    ("--timeout-ms", "0", "PROXYSHIM_TIMEOUT_MS"),
    ("--timeout-ms", "600001", "PROXYSHIM_TIMEOUT_MS"),
    ("--log", "loud", "PROXYSHIM_LOG"),
    ("--consume", "eager", "PROXYSHIM_CONSUME"),
    ("--lazy-grace", "600001", "PROXYSHIM_LAZY_GRACE_MS"),
    ("--lazy-grace", "0.5", "PROXYSHIM_LAZY_GRACE_MS"),
]


@pytest.mark.parametrize("opt,value,var", BAD)
def test_check_refuses_a_bad_value_with_the_librarys_line(opt, value, var):
    r = run(opt, value, "--check", env=clean_env(PROXYSHIM_TRUSTED="127.0.0.1"))
    assert r.returncode == 1, r
    assert r.stdout == b""
    err = one_line(r)
    assert err.startswith('proxyshim: invalid %s="%s": ' % (var, value)), err


@pytest.mark.parametrize("opt,value,var", BAD[:4])
def test_bad_value_stops_the_command_before_main(opt, value, var, tmp_path):
    marker = tmp_path / "ran"
    r = run(opt, value, "--", "sh", "-c", "touch %s" % marker, env=clean_env())
    assert r.returncode == 1, r
    assert not marker.exists()
    assert var in one_line(r)


def test_check_with_command_checks_it_without_running(tmp_path):
    marker = tmp_path / "ran"
    r = run("--trusted", "127.0.0.1", "--check", "--", "sh", "-c", "touch %s" % marker,
            env=clean_env())
    assert check_lines(r)["active"] == "yes"
    assert not marker.exists()


# ---- arguments ----

@pytest.mark.parametrize("args,needle", [
    (["--bogus", "--", "true"], "unknown option '--bogus'"),
    (["--trusted"], "--trusted needs a value"),
    (["--trusted", "1.2.3.4"], "missing COMMAND"),
    ([], "missing COMMAND"),
    (["--mode", "strict", "--mode", "optional", "true"], "--mode given twice"),
    (["-x", "true"], "unknown option '-x'"),
])
def test_bad_arguments_exit_2_with_one_line(args, needle):
    r = run(*args, env=clean_env())
    assert r.returncode == 2, r
    assert r.stdout == b""
    assert needle in one_line(r)


# ---- a flag for every setting, from the settings table ----

def split_args(text):
    """The top-level, comma-separated arguments of a C macro call's text (strings and nested
    parentheses kept whole), each stripped."""
    args, cur, depth, i = [], "", 0, 0
    while i < len(text):
        c = text[i]
        if c == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            cur += text[i:j + 1]
            i = j + 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        if c == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
        else:
            cur += c
        i += 1
    args.append(cur.strip())
    return args


def table_rows():
    """The rows of shim/core/settings_table.h: {NAME: (kind, words or None, flag or None)}."""
    with open(os.path.join(ROOT, "shim", "core", "settings_table.h")) as f:
        text = f.read().replace("\\\n", " ")
    body = text[text.index("#define SHIM_SETTINGS(X)") + len("#define SHIM_SETTINGS(X)"):]
    body = body[:body.index("\n")]
    rows = {}
    for m in re.finditer(r"\bX\(", body):
        depth, j = 1, m.end()
        while depth:
            if body[j] == '"':
                j = body.index('"', j + 1)
                while body[j - 1] == "\\":
                    j = body.index('"', j + 1)
            depth += {"(": 1, ")": -1}.get(body[j], 0)
            j += 1
        a = split_args(body[m.end():j - 1])
        assert len(a) == 14, a
        words = re.findall(r'"([^"]*)"', a[2]) if a[2].startswith("SHIM_WORDS") else None
        rows["PROXYSHIM_" + a[0]] = (a[1], words, None if a[10] == "NULL" else a[10].strip('"'))
    return rows


ROWS = table_rows()
# A valid value of each setting, what COMMAND's environment gets, and what --check then prints.
# Its keys are the table's rows: a row added without a flag and a sample here fails below.
SAMPLES = {
    "PROXYSHIM_TRUSTED": ("10.0.0.0/8, ::1", "10.0.0.0/8,::1/128"),
    "PROXYSHIM_VERSION": ("v2", "v2"),
    "PROXYSHIM_MODE": ("optional", "optional"),
    "PROXYSHIM_PORTS": ("8000-8099,443", "443,8000-8099"),
    "PROXYSHIM_TIMEOUT_MS": ("2500", "2500"),
    "PROXYSHIM_MAX_PARKED": ("7", "7"),
    "PROXYSHIM_DEFER_ACCEPT": ("0", "0"),
    "PROXYSHIM_LOG": ("info", "info"),
    "PROXYSHIM_CONSUME": ("lazy", "lazy"),
    "PROXYSHIM_LAZY_GRACE_MS": ("400", "400"),
    "PROXYSHIM_LOCAL_ADDR": ("header", "header"),
    "PROXYSHIM_KEEP_TLVS": ("1", "1"),
    "PROXYSHIM_TLV_MAX": ("512", "512"),
    "PROXYSHIM_STATS": ("/tmp/x.prom", "/tmp/x.prom"),
    "PROXYSHIM_UNTRUSTED": ("reject", "reject"),
    "PROXYSHIM_CONFIG": (None, None),  # a file the test writes
}
# The flags the issue names (a contract for scripts), besides those that were there before.
NAMED = {"PROXYSHIM_VERSION": "--protocol", "PROXYSHIM_MAX_PARKED": "--max-parked",
         "PROXYSHIM_DEFER_ACCEPT": "--defer-accept", "PROXYSHIM_LOCAL_ADDR": "--local-addr",
         "PROXYSHIM_KEEP_TLVS": "--keep-tlvs", "PROXYSHIM_TLV_MAX": "--tlv-max",
         "PROXYSHIM_CONFIG": "--config"}


def help_options():
    """Every --option the OPTIONS section of --help introduces (at the start of its line)."""
    text = run("--help", env=clean_env()).stdout.decode()
    opts = text[text.index("\nOPTIONS\n"):text.index("\nEXIT STATUS\n")]
    return re.findall(r"^    (?:-\w, )?(--[a-z][a-z0-9-]*)", opts, re.M)


def test_every_setting_has_a_flag_in_help():
    assert set(SAMPLES) == set(ROWS)
    text = run("--help", env=clean_env()).stdout.decode()
    opts = help_options()
    for name, (_, _, flag) in ROWS.items():
        assert flag is not None, "%s has no wrapper flag" % name
        assert flag in opts, flag
        assert re.search(r"^    %s \S+ +%s: " % (re.escape(flag), name), text, re.M), (flag, name)
        if name in NAMED:
            assert flag == NAMED[name]
    assert len({f for _, _, f in ROWS.values()}) == len(ROWS)  # no two rows share one


def test_every_flag_sets_its_variable(tmp_path):
    """Each row's flag, given a value, sets its variable for COMMAND, and the library reads it
    (--check prints it back)."""
    conf = tmp_path / "proxyshim.conf"
    conf.write_text("# the option wins\nPROXYSHIM_TLV_MAX=100\n")
    args = []
    for name, (_, _, flag) in ROWS.items():
        args += [flag, str(conf) if name == "PROXYSHIM_CONFIG" else SAMPLES[name][0]]
    e = env_of(run(*args, "--", "env", env=clean_env()))
    got = {k: v for k, v in e.items() if k.startswith("PROXYSHIM_")}
    assert got == {k: (str(conf) if k == "PROXYSHIM_CONFIG" else v[0]) for k, v in SAMPLES.items()}
    r = run(*args, "--check", env=clean_env())
    s = check_lines(r)
    for name, (_, shown) in SAMPLES.items():
        if name == "PROXYSHIM_CONFIG":
            assert s["config_file"] == str(conf)
        else:
            assert s[name] == shown, name


def test_help_lists_every_option():
    r = run("--help", env=clean_env())
    assert r.returncode == 0 and r.stderr == b""
    text = r.stdout.decode()
    for word in ("SYNOPSIS", "EXIT STATUS", "EXAMPLES", "--trusted", "--protocol", "--mode",
                 "--ports", "--timeout-ms", "--consume", "--lazy-grace", "--log", "--stats",
                 "--check", "PROXYSHIM_CONSUME", "PROXYSHIM_LAZY_GRACE_MS", "126", "127", "statically linked"):
        assert word in text, word


def test_command_not_found_127():
    r = run("--", "no-such-command-proxyshim", env=clean_env())
    assert r.returncode == 127
    assert "no-such-command-proxyshim: command not found in PATH" in one_line(r)
    r = run("--", "/nonexistent/prog", env=clean_env())
    assert r.returncode == 127
    assert "No such file or directory" in one_line(r)


def test_not_executable_126(tmp_path):
    f = tmp_path / "plain"
    f.write_text("#!/bin/sh\necho hi\n")
    f.chmod(0o644)
    r = run("--", str(f), env=clean_env())
    assert r.returncode == 126 and r.stdout == b""
    assert "not an executable file" in one_line(r)


# ---- programs the shim cannot work in ----

def build_c(tmp_path, name, flags, cc="cc"):
    src = tmp_path / "p.c"
    marker = tmp_path / ("ran-" + name)
    src.write_text('#include <stdio.h>\nint main(void){FILE*f=fopen("%s","w");'
                   'if(f)fclose(f);puts("ran");return 0;}\n' % marker)
    out = tmp_path / name
    subprocess.run([cc] + flags + ["-o", str(out), str(src)], check=True, capture_output=True)
    return out, marker


@pytest.mark.parametrize("cc,flags", [("cc", ["-static"]), ("cc", ["-static-pie"]),
                                      pytest.param("musl-gcc", ["-static"], marks=pytest.mark.apps)])
def test_static_binary_is_refused(tmp_path, cc, flags):
    if shutil.which(cc) is None:
        pytest.fail("%s is not installed (make deps)" % cc)
    prog, marker = build_c(tmp_path, "static", flags, cc)
    r = run("--trusted", "127.0.0.1", "--no-supervise", "--", str(prog), env=clean_env())
    assert r.returncode == 126, r
    assert r.stdout == b"" and not marker.exists()
    err = one_line(r)
    assert "%s is statically linked (no ELF interpreter)" % prog in err, err
    assert "LD_PRELOAD" in err and "Go" in err and "supervised" in err


@pytest.mark.parametrize("cc,flags", [("cc", ["-static"]), ("cc", ["-static-pie"]),
                                      pytest.param("musl-gcc", ["-static"], marks=pytest.mark.apps)])
def test_static_binary_runs_supervised_by_default(tmp_path, cc, flags):
    """Without --no-supervise the same kind of program runs, under a seccomp filter, with
    proxyshim-supervise as its parent."""
    if shutil.which(cc) is None:
        pytest.fail("%s is not installed (make deps)" % cc)
    src = tmp_path / "s.c"
    src.write_text(r'''#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(void) {
    char path[64], line[256];
    FILE *f;
    snprintf(path, sizeof(path), "/proc/%d/comm", (int)getppid());
    if ((f = fopen(path, "r")) && fgets(line, sizeof(line), f)) printf("parent=%s", line);
    if ((f = fopen("/proc/self/status", "r")))
        while (fgets(line, sizeof(line), f))
            if (strncmp(line, "Seccomp:", 8) == 0) printf("%s", line);
    return 3;
}
''')
    prog = tmp_path / "static"
    subprocess.run([cc] + flags + ["-o", str(prog), str(src)], check=True, capture_output=True)
    r = run("--trusted", "127.0.0.1", "--", str(prog), env=clean_env())
    assert r.returncode == 3, r
    assert r.stdout.decode().split() == ["parent=proxyshim-super", "Seccomp:", "2"], r
    # The same program with --supervise explicitly: the same.
    r2 = run("--trusted", "127.0.0.1", "--supervise", "--", str(prog), env=clean_env())
    assert (r2.returncode, r2.stdout) == (3, r.stdout), r2


def test_dynamic_build_of_the_same_program_runs(tmp_path):
    prog, marker = build_c(tmp_path, "dynamic", [])
    r = run("--trusted", "127.0.0.1", "--", str(prog), env=clean_env())
    assert (r.returncode, r.stdout, r.stderr) == (0, b"ran\n", b"")
    assert marker.exists()


def fake_elf32_i386(path):
    """An ELF32 i386 executable header with one PT_INTERP program header (never run)."""
    ident = b"\x7fELF" + bytes([1, 1, 1]) + b"\0" * 9
    ehdr = ident + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, 0x8048000, 52, 0, 0, 52, 32, 1, 0, 0, 0)
    phdr = struct.pack("<IIIIIIII", 3, 84, 0, 0, 19, 19, 4, 1)
    path.write_bytes(ehdr + phdr + b"/lib/ld-linux.so.2\0")
    path.chmod(0o755)


def test_program_for_another_architecture_is_refused(tmp_path):
    prog = tmp_path / "i386prog"
    fake_elf32_i386(prog)
    r = run("--", str(prog), env=clean_env())
    assert r.returncode == 126, r
    err = one_line(r)
    assert "is a 32-bit i386 program but %s is 64-bit x86-64" % LIBREAL in err, err


def test_setuid_program_warns_and_runs(tmp_path):
    prog, marker = build_c(tmp_path, "suid", [])
    os.chown(prog, 65534, 65534)
    os.chmod(prog, 0o4755)
    os.chmod(tmp_path, 0o777)  # the set-uid program writes its marker as uid 65534
    r = run("--trusted", "127.0.0.1", "--", str(prog), env=clean_env())
    assert (r.returncode, r.stdout) == (0, b"ran\n"), r
    err = one_line(r)
    assert err == ("proxyshim: warning: %s is set-uid: it runs in secure-execution mode, where "
                   "the shim stays inert\n" % prog)


def test_setgid_program_warns(tmp_path):
    prog, _ = build_c(tmp_path, "sgid", [])
    os.chown(prog, 0, 65534)
    os.chmod(prog, 0o2755)
    os.chmod(tmp_path, 0o777)
    r = run("--", str(prog), env=clean_env())
    assert r.returncode == 0, r
    assert "is set-gid" in one_line(r)


# ---- where it finds the library ----
# PROXYSHIM_LIBRARY, then next to the wrapper, ../lib, ../lib/proxyshim, and Debian's
# multiarch private directory /usr/lib/<triplet>/proxyshim (triplet: the compiler's).

MULTIARCH = subprocess.run(["cc", "-print-multiarch"], capture_output=True,
                           text=True).stdout.strip()
MULTIARCH_DIR = "/usr/lib/%s/proxyshim" % MULTIARCH


def copy_tree(tmp_path, places):
    """bin/proxyshim, and a copy of the library at each of places (paths under tmp_path)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(parents=True)
    shutil.copy(WRAPPER, bindir / "proxyshim")
    for rel in places:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(LIB, tmp_path / rel)
    return bindir / "proxyshim"


def in_multiarch_ns(tmp_path, argv, env, with_lib):
    """argv in a private mount namespace where MULTIARCH_DIR holds a copy of the library
    (with_lib) or nothing: an overlay on /usr/lib/<triplet>, so the machine's own directory is
    never written and tests running beside this one see no change."""
    upper, work = tmp_path / "upper", tmp_path / "work"
    (upper / "proxyshim").mkdir(parents=True)
    work.mkdir()
    if with_lib:
        shutil.copy(LIB, upper / "proxyshim" / "libproxyshim.so")
    else:  # an opaque directory: whatever the machine has there is hidden
        os.setxattr(str(upper / "proxyshim"), "trusted.overlay.opaque", b"y")
    script = ('mount -t overlay overlay -o lowerdir="$1",upperdir="$2",workdir="$3" "$1" && '
              'shift 3 && exec "$@"')
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
                           os.path.dirname(MULTIARCH_DIR), str(upper), str(work)]
                          + [str(a) for a in argv], env=env, capture_output=True, timeout=20)


@pytest.mark.parametrize("layout,places", [
    ("same_dir", ["bin/libproxyshim.so"]),
    ("lib", ["lib/libproxyshim.so"]),
    ("lib_proxyshim", ["lib/proxyshim/libproxyshim.so"]),
    # the first place in the order wins
    ("same_dir_first", ["bin/libproxyshim.so", "lib/libproxyshim.so",
                        "lib/proxyshim/libproxyshim.so"]),
    ("lib_before_lib_proxyshim", ["lib/libproxyshim.so", "lib/proxyshim/libproxyshim.so"]),
])
def test_library_lookup(tmp_path, layout, places):
    wrapper = copy_tree(tmp_path, places)
    want = tmp_path / places[0]
    r = subprocess.run([str(wrapper), "--trusted", "127.0.0.1", "--check"], env=clean_env(),
                       capture_output=True, timeout=10)
    assert r.returncode == 0, r
    assert r.stdout.decode().splitlines()[0] == "library=%s" % want
    r = subprocess.run([str(wrapper), "--", "env"], env=clean_env(), capture_output=True,
                       timeout=10)
    assert env_of(r)["LD_PRELOAD"] == str(want)


def test_library_from_proxyshim_library_comes_first(tmp_path):
    wrapper = copy_tree(tmp_path, ["bin/libproxyshim.so"])
    mine = tmp_path / "elsewhere" / "libproxyshim-custom.so"
    mine.parent.mkdir()
    shutil.copy(LIB, mine)
    env = clean_env(PROXYSHIM_LIBRARY=str(mine))
    r = subprocess.run([str(wrapper), "--trusted", "127.0.0.1", "--check"], env=env,
                       capture_output=True, timeout=10)
    assert r.returncode == 0, r
    assert r.stdout.decode().splitlines()[0] == "library=%s" % mine
    # and COMMAND runs with it; the library takes PROXYSHIM_LIBRARY as a name of its own
    # (an unknown PROXYSHIM_* variable would stop COMMAND before main)
    r = subprocess.run([str(wrapper), "--trusted", "127.0.0.1", "--", "env"], env=env,
                       capture_output=True, timeout=10)
    e = env_of(r)
    assert (e["LD_PRELOAD"], e["PROXYSHIM_LIBRARY"]) == (str(mine), str(mine))
    assert r.stderr == b""


@pytest.mark.parametrize("value", ["{tmp}/nonexistent/libproxyshim.so", "{tmp}"])
def test_proxyshim_library_that_is_not_a_file_fails_closed(tmp_path, value):
    """Named explicitly, the library is that one or none: no fallback to another copy."""
    wrapper = copy_tree(tmp_path, ["bin/libproxyshim.so"])
    value = value.format(tmp=tmp_path)
    for args in (["--", "true"], ["--trusted", "127.0.0.1", "--check"]):
        r = subprocess.run([str(wrapper)] + args, env=clean_env(PROXYSHIM_LIBRARY=value),
                           capture_output=True, timeout=10)
        assert (r.returncode, r.stdout) == (1, b""), r
        assert one_line(r).startswith("proxyshim: PROXYSHIM_LIBRARY=%s: " % value), r


@pytest.mark.skipif(not MULTIARCH, reason="the compiler names no multiarch triplet")
def test_library_in_the_multiarch_directory(tmp_path):
    wrapper = copy_tree(tmp_path, [])
    r = in_multiarch_ns(tmp_path, [wrapper, "--trusted", "127.0.0.1", "--check"], clean_env(),
                        with_lib=True)
    assert r.returncode == 0, r
    assert r.stdout.decode().splitlines()[0] == "library=%s/libproxyshim.so" % MULTIARCH_DIR
    # after ../lib/proxyshim in the order
    wrapper2 = copy_tree(tmp_path / "t2", ["lib/proxyshim/libproxyshim.so"])
    r = in_multiarch_ns(tmp_path / "t2", [wrapper2, "--trusted", "127.0.0.1", "--check"],
                        clean_env(), with_lib=True)
    assert r.stdout.decode().splitlines()[0] == \
        "library=%s" % (tmp_path / "t2" / "lib" / "proxyshim" / "libproxyshim.so"), r


def test_library_missing_names_every_place(tmp_path):
    wrapper = copy_tree(tmp_path, [])
    for args in (["--", "true"], ["--trusted", "127.0.0.1", "--check"]):
        r = in_multiarch_ns(tmp_path / ("ns%d" % len(args)), [wrapper] + args, clean_env(),
                            with_lib=False)
        assert (r.returncode, r.stdout) == (1, b""), r
        d = tmp_path / "bin"
        assert one_line(r) == (
            "proxyshim: cannot find libproxyshim.so: PROXYSHIM_LIBRARY is not set and it is "
            "not in %s, %s/../lib, %s/../lib/proxyshim or %s\n" % (d, d, d, MULTIARCH_DIR))


def test_wrapper_is_found_through_a_symlink(tmp_path):
    """A symlink in PATH (e.g. /usr/local/bin/proxyshim -> /opt/proxyshim/bin/proxyshim) still
    finds the library next to the real file."""
    os.symlink(WRAPPER, tmp_path / "proxyshim")
    r = subprocess.run([str(tmp_path / "proxyshim"), "--check"], env=clean_env(),
                       capture_output=True, timeout=10)
    assert r.stdout.decode().splitlines()[0] == "library=" + LIBREAL


# ---- with a config file (PROXYSHIM_CONFIG, else /etc/proxyshim.conf) ----

def test_check_merges_the_config_file_and_options_win(tmp_path):
    conf = tmp_path / "proxyshim.conf"
    conf.write_text("# a comment\nPROXYSHIM_TRUSTED=10.0.0.0/8\nPROXYSHIM_MODE=optional\n"
                    "PROXYSHIM_TIMEOUT_MS=700\n")
    s = check_lines(run("--mode", "strict", "--check", env=clean_env(PROXYSHIM_CONFIG=str(conf))))
    assert (s["PROXYSHIM_TRUSTED"], s["PROXYSHIM_MODE"], s["PROXYSHIM_TIMEOUT_MS"]) == \
        ("10.0.0.0/8", "strict", "700")
    assert s["config_file"] == str(conf)


def test_check_fails_on_a_bad_config_file(tmp_path):
    conf = tmp_path / "proxyshim.conf"
    conf.write_text("PROXYSHIM_TRUSTED=10.0.0.0/8\nPROXYSHIM_MODE=lenient\n")
    r = run("--check", env=clean_env(PROXYSHIM_CONFIG=str(conf)))
    assert r.returncode == 1, r
    err = one_line(r)
    assert err.startswith("proxyshim: %s:2: invalid PROXYSHIM_MODE=" % conf), err


# ---- bash completion (shim/cli/proxyshim.bash) ----

COMPLETION = os.path.join(ROOT, "shim", "cli", "proxyshim.bash")
BASH_COMPLETION = "/usr/share/bash-completion/bash_completion"


def complete(words, with_lib=False, cwd=None):
    """COMPREPLY of _proxyshim for the command line words, the cursor at the end of the last
    one, in a bash that sourced the completion file (and bash-completion first, with_lib)."""
    script = ('set -e; %s source "$0"; set +e; COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); '
              'COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; '
              '_proxyshim "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"; '
              'printf "%%s\\n" "${COMPREPLY[@]}"'
              % (('source %s;' % BASH_COMPLETION) if with_lib else ""))
    r = subprocess.run(["bash", "-c", script, COMPLETION] + list(words), capture_output=True,
                       text=True, timeout=10, cwd=cwd, env=clean_env(PATH="/usr/bin:/bin"))
    assert r.returncode == 0 and r.stderr == "", r
    return [l for l in r.stdout.splitlines() if l]


LIBS = [False, pytest.param(True, id="bash-completion")]


@pytest.mark.parametrize("with_lib", LIBS)
def test_completion_offers_every_option_of_help(with_lib):
    if with_lib and not os.path.exists(BASH_COMPLETION):
        pytest.fail("bash-completion is not installed (make deps)")
    opts = set(help_options())
    assert {"--trusted", "--protocol", "--config", "--check", "--version", "--help"} <= opts
    assert set(complete(["proxyshim", "--"], with_lib)) == opts
    assert set(complete(["proxyshim", "--trusted", "10.0.0.0/8", "--"], with_lib)) == opts
    assert complete(["proxyshim", "--pro"], with_lib) == ["--protocol"]


@pytest.mark.parametrize("with_lib", LIBS)
def test_completion_of_choice_values_is_the_tables(with_lib):
    choices = {flag: words for kind, words, flag in ROWS.values() if kind == "CHOICE"}
    assert "--protocol" in choices and "--untrusted" in choices
    for flag, words in choices.items():
        assert complete(["proxyshim", flag, ""], with_lib) == words, flag
        # --flag=VALUE: bash splits the word at '=' (COMP_WORDBREAKS)
        assert complete(["proxyshim", flag, "=", ""], with_lib) == words, flag
        assert complete(["proxyshim", flag, "="], with_lib) == words, flag  # cursor after '='
        # the same in one word, when '=' is not in COMP_WORDBREAKS
        assert complete(["proxyshim", flag + "="], with_lib) == [flag + "=" + w for w in words]
    assert complete(["proxyshim", "--protocol", "v"], with_lib) == ["v1", "v2"]
    assert complete(["proxyshim", "--log", "d"], with_lib) == ["debug"]


@pytest.mark.parametrize("with_lib", LIBS)
def test_completion_of_other_values(with_lib, tmp_path):
    (tmp_path / "proxyshim.conf").write_text("")
    for flag in ("--config", "--stats"):
        assert complete(["proxyshim", flag, "proxys"], with_lib, cwd=tmp_path) == \
            ["proxyshim.conf"], flag
    for flag in ("--trusted", "--ports", "--timeout-ms", "--max-parked", "--tlv-max"):
        assert complete(["proxyshim", flag, ""], with_lib, cwd=tmp_path) == [], flag


@pytest.mark.parametrize("with_lib", LIBS)
def test_completion_of_the_command(with_lib):
    assert "true" in complete(["proxyshim", "--trusted", "127.0.0.1", "--", "tru"], with_lib)
    assert "true" in complete(["proxyshim", "--check", "--", "tru"], with_lib)
    assert "true" in complete(["proxyshim", "--log", "info", "tru"], with_lib)
    # after COMMAND, its own arguments: never the wrapper's options
    assert "--protocol" not in complete(["proxyshim", "--", "true", "--pro"], with_lib)
    assert "--protocol" not in complete(["proxyshim", "--log", "warn", "true", "--pro"], with_lib)


def test_completion_passes_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed (make deps)")
    r = subprocess.run(["shellcheck", "-s", "bash", COMPLETION], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout

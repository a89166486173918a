"""The README's two commands as a new user meets them: `make` and `make demo` in a
fresh clone of the committed tree, on a machine without the test packages (cmocka hidden in a
mount namespace of its own); the by-hand demo exactly as README.md prints it; and tests/deps.sh
leaving no service of its packages enabled to start at the next boot."""
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from util import ROOT, free_port

PRODUCT = {"libproxyshim.so", "proxyshim", "proxyshim-send", "proxyshim-supervise"}

# Runs "$@" in a mount namespace where cmocka (its headers and libraries) is not installed: an
# overlay with a whiteout over each directory that holds a cmocka file. It first proves that
# `#include <cmocka.h>` fails there and that the linker finds no libcmocka.
HIDE_CMOCKA = r"""
set -eu
t=$1; shift
mount --make-rprivate /
mount -t tmpfs tmpfs "$t"
n=0
for d in /usr/include /usr/local/include /usr/lib/$(cc -print-multiarch) /usr/lib /usr/local/lib; do
	[ -d "$d" ] || continue
	hide=""
	for f in "$d"/cmocka* "$d"/libcmocka*; do
		if [ -e "$f" ] || [ -L "$f" ]; then hide="$hide ${f##*/}"; fi
	done
	[ -n "$hide" ] || continue
	n=$((n + 1))
	mkdir -p "$t/$n/up" "$t/$n/work"
	for f in $hide; do mknod "$t/$n/up/$f" c 0 0; done
	mount -t overlay overlay -o "lowerdir=$d,upperdir=$t/$n/up,workdir=$t/$n/work" "$d"
done
if printf '#include <cmocka.h>\n' | cc -E - >/dev/null 2>"$t/probe"; then
	echo "PROBE: cmocka.h is still found"; exit 99
fi
grep -q 'cmocka.h: No such file' "$t/probe" || { cat "$t/probe"; exit 98; }
case "$(cc -print-file-name=libcmocka.so)" in /*) echo "PROBE: libcmocka is still found"; exit 97 ;; esac
echo "PROBE: no cmocka here"
exec "$@"
"""


def clean_env():
    """The environment of a new user's shell: no make or build settings inherited from the
    make that runs these tests."""
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "BUILD", "CFLAGS", "CC",
              "LD_PRELOAD", "PROXYSHIM_BUILD"):
        env.pop(k, None)
    return env


def fresh_clone(tmp_path):
    """A `git clone` of this tree's committed HEAD: nothing built, nothing untracked."""
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    dst = str(tmp_path / "proxyshim")
    subprocess.run(["git", "clone", "-q", "--no-checkout", ROOT, dst], check=True)
    subprocess.run(["git", "-C", dst, "checkout", "-q", head], check=True)
    assert not os.path.exists(os.path.join(dst, "build"))
    return dst


def without_cmocka(tmp_path, argv, cwd, timeout=600):
    """Runs argv in cwd where cmocka is not installed; returns (exit status, output)."""
    if os.geteuid() != 0:
        pytest.fail("hiding cmocka needs root (unshare --mount, overlay mounts)")
    ns = tmp_path / "ns"
    ns.mkdir()
    r = subprocess.run(["unshare", "--mount", "sh", "-c", HIDE_CMOCKA, "hide-cmocka", str(ns)] + argv,
                       cwd=cwd, env=clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=timeout)
    assert "PROBE: no cmocka here" in r.stdout, "cmocka could not be hidden:\n" + r.stdout
    return r.returncode, r.stdout


def built_files(tree):
    """Every file make left in tree/build, bar the object files (obj/, and obj-static/: the
    statically linked supervisor's)."""
    out = set()
    build = os.path.join(tree, "build")
    for d, dirs, files in os.walk(build):
        rel = os.path.relpath(d, build)
        if rel.split(os.sep)[0] in ("obj", "obj-static"):
            continue
        out.update(os.path.normpath(os.path.join(rel, f)) for f in files)
    return out


@pytest.mark.time_limit(600)
def test_make_builds_the_product_without_test_packages(tmp_path):
    """`make` on a machine with a C compiler and libc only builds the library, the two
    programs and the supervisor, and nothing that needs the test packages."""
    tree = fresh_clone(tmp_path)
    rc, out = without_cmocka(tmp_path, ["make", "-j2"], tree)
    assert rc == 0, "make failed without cmocka:\n" + out[-3000:]
    built = built_files(tree)
    assert PRODUCT <= built, "missing: %s\n%s" % (sorted(PRODUCT - built), out[-2000:])
    # the product and the protocol archive proxyshim-send links with: no test program
    assert built - PRODUCT <= {"libproto.a"}, "make built more than the product: %s" % sorted(built - PRODUCT)


@pytest.mark.time_limit(600)
def test_make_demo_first_on_a_fresh_machine(tmp_path):
    """`make demo` as the first command in a fresh clone, without the test packages: the
    server logs the address the PROXY header announced."""
    tree = fresh_clone(tmp_path)
    rc, out = without_cmocka(tmp_path, ["make", "demo"], tree)
    assert rc == 0, "make demo failed:\n" + out[-3000:]
    assert re.search(r'^203\.0\.113\.7 - - \[[^]]+\] "GET / HTTP/1\.0" 200', out, re.M), out[-3000:]


def readme_demo():
    """The by-hand demo of README.md: [(command, [output lines])]."""
    text = open(os.path.join(ROOT, "README.md")).read()
    m = re.search(r"^The demo by hand.*?\n```\n(.*?)\n```", text, re.M | re.S)
    assert m, "README.md has no by-hand demo block"
    steps = []
    for line in m.group(1).split("\n"):
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, "output before any command: %r" % line
            steps[-1][1].append(line)
    return steps


def test_readme_demo_by_hand(tmp_path):
    """The by-hand demo binds loopback only, and prints what its commands really print: the
    server's start line, its log line (stderr) with the header's address, and the first line
    of the reply the sender printed."""
    steps = readme_demo()
    (server, server_out), = [s for s in steps if "http.server" in s[0]]
    (sender, sender_out), = [s for s in steps if "proxyshim-send" in s[0]]
    assert re.search(r"(^|\s)--bind 127\.0\.0\.1(\s|$)", server), server
    assert server.endswith(" &"), server
    assert re.search(r"\b8000$", server[:-2]) and re.search(r"\b8000\b", sender)

    port = free_port()
    env = clean_env()
    # The server's stdout is a file here, not a terminal: PYTHONUNBUFFERED=1 writes its start
    # line at once, as python3 does on a terminal.
    with open(tmp_path / "out", "w") as so, open(tmp_path / "err", "w") as se:
        srv = subprocess.Popen(["sh", "-c", re.sub(r"\b8000$", str(port), server[:-2])],
                               cwd=ROOT, env=dict(env, PYTHONUNBUFFERED="1"),
                               stdin=subprocess.DEVNULL, stdout=so, stderr=se,
                               start_new_session=True)
    try:
        # Not wait_port(): the shim would log a connection that closes without a header. The
        # server prints its start line once it listens.
        deadline = time.monotonic() + 10
        while "Serving HTTP" not in (tmp_path / "out").read_text():
            assert srv.poll() is None and time.monotonic() < deadline, (tmp_path / "err").read_text()
            time.sleep(0.05)
        r = subprocess.run(["sh", "-c", re.sub(r"\b8000\b", str(port), sender)], cwd=ROOT, env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        deadline = time.monotonic() + 5
        while "GET /" not in (tmp_path / "err").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(srv.pid, signal.SIGTERM)
        srv.wait(10)
    err = (tmp_path / "err").read_text().splitlines()
    out = (tmp_path / "out").read_text().splitlines()
    assert r.returncode == 0, r.stderr
    # What the terminal shows: the server's start line (stdout) after its command, and after
    # the sender's command the server's log line (stderr), then the sender's output.
    assert [l.replace(str(port), "8000") for l in out] == server_out
    shown_log = [l for l in sender_out if not l.startswith("HTTP/")]
    shown_reply = [l for l in sender_out if l.startswith("HTTP/")]
    assert r.stdout.splitlines() == shown_reply, r.stdout
    stamp = re.compile(r"\[[^]]+\]")
    assert [stamp.sub("[]", l) for l in err] == [stamp.sub("[]", l) for l in shown_log]
    assert err and err[0].startswith("203.0.113.7 - - ["), err


# Runs tests/deps.sh as root where every change it makes lands in a tmpfs (overlays over /etc,
# /var/lib/systemd, /usr/sbin), where strace and npm look missing (whiteouts in /usr/bin), and
# where apt-get is a stand-in that "installs" them as a package's postinst would: it enables a
# service and a socket unit with deb-systemd-helper and an init script with update-rc.d.
FAKE_INSTALL = r"""
set -eu
t=$1; root=$2
mount --make-rprivate /
mount -t tmpfs tmpfs "$t"
n=0
over() { # over DIR [NAME...]: an overlay on DIR, with whiteouts for NAME...
	d=$1; shift
	n=$((n + 1)); mkdir -p "$t/$n/up" "$t/$n/work"
	for f; do mknod "$t/$n/up/$f" c 0 0; done
	mount -t overlay overlay -o "lowerdir=$d,upperdir=$t/$n/up,workdir=$t/$n/work" "$d"
}
over /etc; over /var/lib/systemd; over /usr/sbin; over /usr/bin strace npm
mkdir -p "$t/fake"
cat >"$t/fake/apt-get" <<'EOS'
#!/bin/sh
echo "apt-get $*" >>/etc/fake-apt.log
printf '[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n' \
	>/etc/systemd/system/proxyshim-fake.service
printf '[Unit]\nDescription=x\n[Socket]\nListenStream=127.0.0.1:1\n[Install]\nWantedBy=sockets.target\n' \
	>/etc/systemd/system/proxyshim-fake-sock.socket
printf '#!/bin/sh\n### BEGIN INIT INFO\n# Provides: proxyshim-fake\n# Required-Start:\n# Required-Stop:\n# Default-Start: 2 3 4 5\n# Default-Stop: 0 1 6\n### END INIT INFO\nexit 0\n' \
	>/etc/init.d/proxyshim-fake
chmod +x /etc/init.d/proxyshim-fake
DPKG_MAINTSCRIPT_PACKAGE=proxyshim-fake deb-systemd-helper enable proxyshim-fake.service proxyshim-fake-sock.socket
update-rc.d proxyshim-fake defaults
EOS
chmod +x "$t/fake/apt-get"
export PATH="$t/fake:/usr/sbin:/usr/bin:/sbin:/bin"
# A service of one of deps.sh's packages that the machine's owner enabled before: it stays.
if [ -e /lib/systemd/system/ssh.service ] && command -v systemctl >/dev/null; then
	systemctl --root=/ --quiet enable ssh.service
fi
ls /etc/systemd/system/*.wants/* /etc/rc[2-5].d/S* 2>/dev/null | sort >"$t/before"
sh "$root/tests/deps.sh" || echo "deps.sh exit $?"
echo "== apt"; cat /etc/fake-apt.log
echo "== before"; cat "$t/before"
echo "== after"; ls /etc/systemd/system/*.wants/* /etc/rc[2-5].d/S* 2>/dev/null | sort
"""


def test_deps_install_disables_what_it_enabled(tmp_path):
    """An install by tests/deps.sh (apt-get a stand-in, all changes in a tmpfs) leaves the
    units and the init script the install enabled disabled at boot, and every other enabled unit
    as it was: sshd, enabled by the machine's owner before, included."""
    if os.geteuid() != 0:
        pytest.fail("needs root (unshare --mount, overlay mounts)")
    ns = tmp_path / "ns"
    ns.mkdir()
    r = subprocess.run(["unshare", "--mount", "sh", "-c", FAKE_INSTALL, "fake-install", str(ns), ROOT],
                       env=clean_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    parts = dict(re.findall(r"^== (\w+)\n(.*?)(?=^== |\Z)", r.stdout, re.M | re.S))
    assert "install" in parts["apt"] and "strace" in parts["apt"], r.stdout + r.stderr
    before, after = parts["before"].split(), parts["after"].split()
    if os.path.exists("/lib/systemd/system/ssh.service") and shutil.which("systemctl"):
        assert "/etc/systemd/system/multi-user.target.wants/ssh.service" in before, r.stdout + r.stderr
    fake = [l for l in after if "proxyshim-fake" in l]
    assert not fake, "enabled at boot after deps.sh:\n%s\n%s" % ("\n".join(fake), r.stderr)
    assert after == before, r.stdout + r.stderr

"""The Debian package `make deb` built (build/deb/, or DEB_DIR): lintian finds nothing; its files,
modes, conffile and paths; the demo runs with the library and sender it ships, extracted into a
scratch root (dpkg -x); the package installed at its real paths in a private mount namespace
(the files overlaid on /usr there, never on this machine) runs a server through the wrapper;
and dpkg --root installs it into a scratch root with a dpkg database of its own, where removal
is refused while that root's /etc/ld.so.preload names the library. Run by `make deb-test`."""
import glob
import gzip
import hashlib
import os
import re
import socket
import subprocess

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEB_DIR = os.environ.get("DEB_DIR", os.path.join(ROOT, "build", "deb"))
VERSION = open(os.path.join(ROOT, "VERSION")).read().strip()


def out(*argv):
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout.strip()


ARCH = out("dpkg-architecture", "-qDEB_HOST_ARCH")
MULTIARCH = out("dpkg-architecture", "-qDEB_HOST_MULTIARCH")
DEB = os.path.join(DEB_DIR, "proxyshim_%s_%s.deb" % (VERSION, ARCH))
SHLIBDIR = "/usr/lib/%s/proxyshim" % MULTIARCH
LIB = SHLIBDIR + "/libproxyshim.so"

# path in the package: (mode, the tree's file it must equal, or None)
FILES = {
    "/usr/bin/proxyshim": (0o755, None),
    "/usr/bin/proxyshim-send": (0o755, None),
    "/usr/lib/proxyshim/proxyshim-supervise": (0o755, None),
    SHLIBDIR + "/libproxyshim.so.1": (0o644, None),
    "/usr/include/proxyshim.h": (0o644, "include/proxyshim.h"),
    "/etc/proxyshim.conf": (0o644, "docs/examples/proxyshim.conf"),
    "/usr/share/doc/proxyshim/examples/proxyshim.conf.systemd-dropin": (0o644, None),
    "/usr/share/doc/proxyshim/copyright": (0o644, "debian/copyright"),
    "/usr/share/doc/proxyshim/changelog.gz": (0o644, None),
    "/usr/share/man/man1/proxyshim.1.gz": (0o644, None),
    "/usr/share/man/man1/proxyshim-send.1.gz": (0o644, None),
    "/usr/share/man/man5/proxyshim.conf.5.gz": (0o644, None),
    "/usr/share/man/man7/libproxyshim.7.gz": (0o644, None),
}
if os.path.exists(os.path.join(ROOT, "shim/cli/proxyshim.bash")):
    FILES["/usr/share/bash-completion/completions/proxyshim"] = (0o644, "shim/cli/proxyshim.bash")
SYMLINKS = {LIB: "libproxyshim.so.1"}


@pytest.fixture(scope="module")
def deb():
    assert os.path.exists(DEB), "no %s: `make deb-test` builds it first" % DEB
    return DEB


@pytest.fixture(scope="module")
def root(deb, tmp_path_factory):
    """The package's files extracted into a scratch root."""
    r = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg", "-x", deb, str(r)], check=True, timeout=60)
    return str(r)


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k != "LD_PRELOAD" and not k.startswith("PROXYSHIM_")}
    env.update(extra)
    return env


def test_lintian_finds_nothing(deb):
    changes = os.path.join(DEB_DIR, "proxyshim_%s_%s.changes" % (VERSION, ARCH))
    r = subprocess.run(["lintian", "--pedantic", "--display-info", "--fail-on", "error,warning,info,pedantic",
                        changes], capture_output=True, text=True, timeout=300)
    tags = [l for l in (r.stdout + r.stderr).splitlines() if re.match(r"^[EWIPXOCN]: ", l)]
    assert (r.returncode, tags) == (0, []), r.stdout + r.stderr


def test_control_fields_and_conffile(deb):
    fields = dict(l.split(": ", 1) for l in out("dpkg-deb", "-f", deb, "Package", "Version",
                                                "Architecture", "Depends").splitlines())
    assert fields["Package"] == "proxyshim"
    assert fields["Version"] == VERSION  # VERSION is the version's one source
    assert fields["Architecture"] == ARCH
    assert fields["Depends"].startswith("libc6")
    assert out("dpkg-deb", "--info", deb, "conffiles").split() == ["/etc/proxyshim.conf"]


def test_files_modes_and_paths(deb, root):
    listing = out("dpkg-deb", "-c", deb).splitlines()
    entries = {}
    for line in listing:
        perm, _, _, _, _, path = line.split(None, 5)
        path = path[1:]  # "./usr/..." -> "/usr/..."
        if perm.startswith("d"):
            continue
        entries[path.split(" -> ")[0]] = perm
    assert set(entries) == set(FILES) | set(SYMLINKS)
    for path, (mode, src) in FILES.items():
        st = os.lstat(root + path)
        assert (st.st_mode & 0o170000, st.st_mode & 0o7777) == (0o100000, mode), path
        if src:
            with open(root + path, "rb") as a, open(os.path.join(ROOT, src), "rb") as b:
                assert a.read() == b.read(), path
    for path, target in SYMLINKS.items():
        assert os.readlink(root + path) == target
    # The library's SONAME is the file's name; it needs the C library only.
    dyn = out("readelf", "-d", root + SHLIBDIR + "/libproxyshim.so.1")
    assert "Library soname: [libproxyshim.so.1]" in dyn
    assert re.findall(r"Shared library: \[(.*?)\]", dyn) == ["libc.so.6"]


def test_paths_in_man_page_and_systemd_example(root):
    page = gzip.open(root + "/usr/share/man/man7/libproxyshim.7.gz", "rt").read()
    assert "LD_PRELOAD=" + LIB in page and "/usr/local" not in page
    for man in glob.glob(root + "/usr/share/man/man*/*.gz"):
        r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z"], input=gzip.open(man).read(),
                           capture_output=True, timeout=30)
        assert (r.returncode, r.stderr) == (0, b""), (man, r.stderr)
    dropin = open(root + "/usr/share/doc/proxyshim/examples/proxyshim.conf.systemd-dropin").read()
    assert dropin.splitlines().count("[Service]") == 1
    (env,) = [l for l in dropin.splitlines() if l.startswith("Environment=LD_PRELOAD=")]
    assert env.split() == ["Environment=LD_PRELOAD=" + LIB, "PROXYSHIM_TRUSTED=10.0.0.0/16"]


def settings_with(lib, conf):
    """What the packaged library froze with PROXYSHIM_CONFIG=conf: proxyshim_settings(), looked
    up in a python3 it is preloaded into, as an application would."""
    code = ("import ctypes; b = ctypes.create_string_buffer(8192); "
            "ctypes.CDLL(None).proxyshim_settings(b, 8192); print(b.value.decode())")
    r = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True, timeout=30,
                       env=clean_env(LD_PRELOAD=lib, PROXYSHIM_CONFIG=conf))
    assert r.returncode == 0, r
    return r.stdout


def test_sample_conf_is_inert_as_shipped_and_valid_uncommented(root, tmp_path):
    lib = root + LIB
    conf = root + "/etc/proxyshim.conf"
    text = open(conf).read()
    # as shipped: comments only, so nothing changes and nothing is wrong
    assert all(l == "" or l.startswith("#") for l in text.splitlines())
    got = settings_with(lib, conf)
    assert "active=no reason=PROXYSHIM_TRUSTED is not set" in got and "error=" not in got, got
    # every setting it shows, uncommented, is a valid line of the file
    on = tmp_path / "on.conf"
    on.write_text(re.sub(r"(?m)^#(PROXYSHIM_[A-Z_]+=)", r"\1", text))
    keys = re.findall(r"(?m)^(PROXYSHIM_[A-Z_]+)=", on.read_text())
    assert len(keys) >= 15, keys
    got = settings_with(lib, str(on))
    assert got.startswith("active=yes") and "error=" not in got, got
    assert "PROXYSHIM_TRUSTED=10.0.0.0/16" in got and "PROXYSHIM_VERSION=v2" in got, got


def test_demo_with_the_extracted_package(root, tmp_path):
    """tests/demo.sh with its library and sender taken from the package."""
    d = tmp_path / "demo"
    d.mkdir()
    os.symlink(root + LIB, d / "libproxyshim.so")
    os.symlink(root + "/usr/bin/proxyshim-send", d / "proxyshim-send")
    r = subprocess.run(["sh", os.path.join(ROOT, "tests/demo.sh")], capture_output=True, text=True,
                       timeout=60, env=clean_env(BUILD=os.path.relpath(d, ROOT)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the server saw the header's 203.0.113.7" in r.stdout, r.stdout


def in_namespace(root, script, timeout=60):
    """script run by sh in a private mount namespace in which the package's files are overlaid
    on /usr: what an installed package gives, without installing it here."""
    wrapped = ("set -e; mount --make-rprivate / 2>/dev/null || true; "
               "mount -t overlay overlay -o lowerdir=%s/usr:/usr /usr; %s" % (root, script))
    return subprocess.run(["unshare", "--mount", "sh", "-c", wrapped], capture_output=True,
                          text=True, timeout=timeout, env=clean_env())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_installed_wrapper_finds_library_and_supervisor(root):
    port = free_port()
    r = in_namespace(root, """
/usr/bin/proxyshim --trusted 127.0.0.1 --check | head -n 1
/usr/bin/proxyshim --trusted 127.0.0.1 --supervise -- /bin/sh -c 'grep ^Seccomp: /proc/self/status'
d=$(mktemp -d)
/usr/bin/proxyshim --trusted 127.0.0.1 -- /usr/bin/python3 -m http.server --bind 127.0.0.1 \
    --directory "$d" %d >"$d/log" 2>&1 &
pid=$!
i=0
until /usr/bin/python3 -c "import socket; socket.create_connection(('127.0.0.1', %d), 1)" 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 200 ] || break; sleep 0.05
done
printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /usr/bin/proxyshim-send -2 --src 198.51.100.9:4711 127.0.0.1 %d >/dev/null
sleep 0.2
kill $pid; wait $pid 2>/dev/null || true
grep '"GET / HTTP/1.0"' "$d/log"; rm -rf "$d"
""" % (port, port, port))
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and len(lines) == 3, r
    assert lines[0] in ("library=" + LIB, "library=" + LIB + ".1"), r
    assert lines[1].split() == ["Seccomp:", "2"], r
    assert lines[2].startswith("198.51.100.9 "), r  # the server's log: the header's client


def dpkg_root(r, *args):
    return subprocess.run(["dpkg", "--root=" + r, "--force-script-chrootless"] + list(args),
                          capture_output=True, text=True, timeout=120, env=clean_env())


def host_dpkg_state():
    h = hashlib.sha256()
    for f in ("/var/lib/dpkg/status", "/var/lib/dpkg/available"):
        if os.path.exists(f):
            h.update(open(f, "rb").read())
    return h.hexdigest()


def test_dpkg_root_install_and_removal_refused_while_preloaded(deb, tmp_path):
    before = host_dpkg_state()
    r = str(tmp_path / "sysroot")
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"):
        os.makedirs(os.path.join(r, d))
    open(os.path.join(r, "var/lib/dpkg/status"), "w").close()
    # libc6 is this machine's, not the scratch database's
    p = dpkg_root(r, "--force-depends", "-i", deb)
    assert p.returncode == 0, p.stdout + p.stderr
    assert os.path.islink(r + LIB) and os.path.isfile(r + LIB + ".1")
    assert "Conffiles:\n /etc/proxyshim.conf " in dpkg_root(r, "-s", "proxyshim").stdout

    # /etc/ld.so.preload names the library (through its symlink): removal refused, with why
    preload = os.path.join(r, "etc/ld.so.preload")
    with open(preload, "w") as f:
        f.write("/usr/lib/other.so\n" + LIB + "\n")
    p = dpkg_root(r, "-r", "proxyshim")
    assert p.returncode != 0, p
    assert "ld.so.preload names %s" % LIB in p.stderr, p.stderr
    assert os.path.isfile(r + LIB + ".1")
    # ... by the file the SONAME names, too
    with open(preload, "w") as f:
        f.write(LIB + ".1\n")
    p = dpkg_root(r, "-r", "proxyshim")
    assert p.returncode != 0 and os.path.isfile(r + LIB + ".1"), p

    # another library, and a pattern (ld.so does not expand it): removed, the conffile kept
    # until purge
    with open(preload, "w") as f:
        f.write("/usr/lib/other.so /usr/lib/*/proxyshim/*.so\n")
    p = dpkg_root(r, "-r", "proxyshim")
    assert p.returncode == 0, p.stdout + p.stderr
    assert not os.path.lexists(r + LIB) and not os.path.exists(r + "/usr/bin/proxyshim")
    assert os.path.exists(r + "/etc/proxyshim.conf")
    p = dpkg_root(r, "-P", "proxyshim")
    assert p.returncode == 0 and not os.path.exists(r + "/etc/proxyshim.conf"), p
    # this machine's dpkg database never saw it
    assert host_dpkg_state() == before
    assert subprocess.run(["dpkg", "-s", "proxyshim"], capture_output=True).returncode != 0

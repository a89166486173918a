"""make images: docker/Dockerfile and the legacy-nginx example, built for real with buildah (vfs
storage, chroot isolation) and run with podman and runc, all in build/images/ (storage, settings,
volumes). No image is pulled: the base images are local, made from Debian's packages
(tests/images/base.sh: debootstrap, cached; busybox.Containerfile and nginx.Containerfile: the
stand-ins for busybox and the official nginx image, built from it) and passed as the
Dockerfiles' build arguments. Then: the image's labels and files; the init container copies into
a volume with a read-only root and no capability, the files owned by the copying user with the
modes the entrypoint sets; Debian's nginx in the example image logs the client of the header
(proxyshim-send from the volume, and HAProxy's send-proxy-v2 run from the host inside the
container's network namespace), not 127.0.0.1. The containers have no network but their own
loopback (--network none). Needs root."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HERE = os.path.dirname(os.path.abspath(__file__))
IMAGES_DIR = os.environ.get("PROXYSHIM_IMAGES_DIR", os.path.join(ROOT, "build", "images"))
VERSION = open(os.path.join(ROOT, "VERSION")).read().strip()

BASE = "localhost/proxyshim-base:bookworm"
BUSYBOX = "localhost/proxyshim-test-busybox:bookworm"
NGINX = "localhost/proxyshim-test-nginx:bookworm"
PROXYSHIM = "localhost/proxyshim:test"
LEGACY = "localhost/legacy-nginx-proxyshim:test"

NOBODY = 65534
# What the copy entrypoint puts into the volume, with the modes it sets.
SHIPPED = {"libproxyshim.so": 0o644, "proxyshim": 0o755, "proxyshim-send": 0o755,
           "proxyshim-supervise": 0o755}
# What docker/Dockerfile copies from the build context: all .dockerignore lets through.
CONTEXT = ("Makefile", "VERSION", "include", "shim", "docker/copy-entrypoint.sh")

# (what, value): printed at the end of the run (conftest.py).
MEASURED = []


def measured(what, value):
    MEASURED.append((what, value))


def _storage_env():
    """The environment tests/images/env.sh sets: buildah and podman on build/images/."""
    r = subprocess.run(["sh", "-c", '. "$0" "$1" && env -0', os.path.join(HERE, "env.sh"),
                        IMAGES_DIR], capture_output=True, check=True)
    return dict(kv.split("=", 1) for kv in r.stdout.decode().split("\0") if "=" in kv)


ENV = _storage_env()


def run(argv, timeout=120, check=True, **kw):
    r = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=timeout, **kw)
    if check:
        assert r.returncode == 0, "%s: exit %d\n%s\n%s" % (" ".join(argv), r.returncode,
                                                            r.stdout[-3000:], r.stderr[-3000:])
    return r


def bud(tag, containerfile, context, *build_args):
    """buildah bud with the tests' storage, chroot isolation and the layer cache; its time."""
    argv = ["buildah", "bud", "--layers", "--isolation", "chroot", "-f", containerfile, "-t", tag]
    for a in build_args:
        argv += ["--build-arg", a]
    t = time.monotonic()
    r = run(argv + [context], timeout=900)
    USED.update(re.findall(r"^(?:--> |--> Using cache )([0-9a-f]{11,64})", r.stdout, re.M))
    return time.monotonic() - t


# The layers the builds of this run made or took from the cache (ids as buildah prints them).
USED = set()


def collect_garbage():
    """With vfs every layer is a whole copy of its tree (the build stage's: about 470 MB), and
    each change of the sources leaves the previous build's layers behind, untagged. Removes the
    untagged images this run's builds did not use; the used ones are the next run's cache. First
    the builds' working containers that buildah leaves (one for each stage that is only copied
    from, one for a failed build), which would hold their images."""
    run(["buildah", "rm", "--all"], check=False)
    r = podman("images", "--all", "--no-trunc", "--filter", "dangling=true", "--format", "{{.ID}}")
    old = [i.split(":")[-1] for i in r.stdout.split()]
    old = [i for i in old if not any(i.startswith(u) for u in USED)]
    for _ in range(10):  # children first: an image with a child cannot go yet
        if not old:
            break
        old = [i for i in old if podman("rmi", i, check=False).returncode != 0]
    return old


def podman(*args, **kw):
    return run(["podman"] + list(args), **kw)


def size(image):
    return int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)


@pytest.fixture(scope="session", autouse=True)
def images():
    """The local base (debootstrap, once), the stand-ins, then the proxyshim image and the
    example, as a user builds them but with the local images as the base-image arguments."""
    assert os.geteuid() == 0, "make images needs root (buildah and podman on vfs storage, runc)"
    t = time.monotonic()
    r = subprocess.run([os.path.join(HERE, "base.sh"), IMAGES_DIR], env=ENV, capture_output=True,
                       text=True, timeout=1800)
    assert r.returncode == 0, r.stderr
    how = "made: debootstrap + import" if "debootstrap" in r.stderr else "cached"
    measured("base image %s (tests/images/base.sh)" % how, "%.1f s" % (time.monotonic() - t))
    base = "BASE_IMAGE=" + BASE
    for what, tag, cf in (("busybox", BUSYBOX, "busybox.Containerfile"),
                          ("nginx", NGINX, "nginx.Containerfile")):
        measured("stand-in %s build" % what, "%.1f s" % bud(tag, os.path.join(HERE, cf), HERE, base))
    measured("docker/Dockerfile build", "%.1f s" % bud(
        PROXYSHIM, os.path.join(ROOT, "docker", "Dockerfile"), ROOT, "BUILD_IMAGE=" + BASE,
        "RUN_IMAGE=" + BUSYBOX, "VERSION=" + VERSION))
    legacy = os.path.join(ROOT, "docker", "examples", "legacy-nginx")
    measured("docker/examples/legacy-nginx build", "%.1f s" % bud(
        LEGACY, os.path.join(legacy, "Dockerfile"), legacy, "PROXYSHIM_IMAGE=" + PROXYSHIM,
        "NGINX_IMAGE=" + NGINX))
    for what, image in (("proxyshim image", PROXYSHIM), ("  of which its busybox base", BUSYBOX),
                        ("legacy-nginx image", LEGACY), ("  of which its nginx base", NGINX)):
        measured(what + " size", "%d bytes" % size(image))
    yield
    left = collect_garbage()
    measured("container storage (build/images/storage)", subprocess.run(
        ["du", "-sh", os.path.join(IMAGES_DIR, "storage")], capture_output=True,
        text=True).stdout.split("\t")[0] + ("" if not left else ", %d old images kept" % len(left)))


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="t-", dir=IMAGES_DIR)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def volume(base, owner=NOBODY):
    """A folder for the container's /shared: an emptyDir the init container's user can write."""
    d = os.path.join(base, "shared")
    os.mkdir(d)
    os.chown(d, owner, owner)
    os.chmod(d, 0o755)
    return d


def init_container(vol):
    """The init container as docker/k8s runs it: its own user (the image's 65534), a read-only
    root, no capability, no network; the volume at /shared (the image's default argument)."""
    t = time.monotonic()
    r = podman("run", "--rm", "--read-only", "--cap-drop", "ALL", "--network", "none",
               "-v", vol + ":/shared", PROXYSHIM, check=False)
    return r, time.monotonic() - t


@pytest.fixture(scope="module")
def copied():
    """The volume after one run of the init container."""
    d = tempfile.mkdtemp(prefix="vol-", dir=IMAGES_DIR)
    vol = volume(d)
    r, took = init_container(vol)
    measured("init container run (copy into the volume)", "%.1f s" % took)
    yield vol, r
    shutil.rmtree(d, ignore_errors=True)


# ---- the image ----

def test_build_context_is_only_what_the_dockerfile_copies(workdir):
    """.dockerignore: the context docker/Dockerfile is built from holds the files it copies and
    nothing else (not build/, with this storage in it, nor .git, nor tests' node_modules)."""
    cf = os.path.join(workdir, "Containerfile")
    with open(cf, "w") as f:
        f.write("FROM %s\nCOPY . /ctx/\n" % BUSYBOX)
    bud("localhost/proxyshim-context:test", cf, ROOT)
    try:
        r = podman("run", "--rm", "--network", "none", "localhost/proxyshim-context:test",
                   "find", "/ctx", "-type", "f", "-exec", "stat", "-c", "%s %n", "{}", "+")
    finally:
        podman("rmi", "localhost/proxyshim-context:test", check=False)
    got = {}
    for l in r.stdout.splitlines():
        n, path = l.split(" ", 1)
        got[os.path.relpath(path, "/ctx")] = int(n)
    want = set()
    for p in CONTEXT:
        full = os.path.join(ROOT, p)
        if os.path.isdir(full):
            for d, _, files in os.walk(full):
                want.update(os.path.relpath(os.path.join(d, f), ROOT) for f in files)
        else:
            want.add(p)
    assert set(got) == want, (sorted(set(got) - want)[:20], sorted(want - set(got)))
    total = sum(got.values())
    measured("build context (after .dockerignore)", "%d files, %d bytes" % (len(got), total))
    assert total < 2 * 1024 * 1024, total


def test_image_labels_user_and_entrypoint():
    fmt = "{{json .Labels}}\n{{.Config.User}}\n{{json .Config.Entrypoint}}\n{{json .Config.Cmd}}"
    r = podman("image", "inspect", "--format", fmt, PROXYSHIM)
    labels, user, entry, cmd = r.stdout.splitlines()
    labels = json.loads(labels)
    assert labels["org.opencontainers.image.version"] == VERSION, labels
    assert labels["org.opencontainers.image.title"] == "proxyshim", labels
    assert user == "65534:65534"
    assert json.loads(entry) == ["/proxyshim/copy-entrypoint.sh"]
    assert json.loads(cmd) == ["/shared"]


# ---- the init container ----

def test_init_container_copies_into_the_volume_read_only_without_capabilities(copied):
    vol, r = copied
    assert r.returncode == 0, r.stderr
    assert r.stdout == "proxyshim-copy: copied %s into /shared\n" % " ".join(SHIPPED)
    assert sorted(os.listdir(vol)) == sorted(SHIPPED)  # no temporary file left
    for f, mode in SHIPPED.items():
        st = os.stat(os.path.join(vol, f))
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (NOBODY, NOBODY, mode), f


def test_init_container_flags_hold(workdir):
    """What the copy ran under, seen from inside: no capability at all, the root read-only,
    uid 65534 (the image's USER)."""
    r = podman("run", "--rm", "--read-only", "--cap-drop", "ALL", "--network", "none",
               "--entrypoint", "/bin/sh", PROXYSHIM, "-c",
               "id -u; grep -E '^Cap(Eff|Prm|Bnd):' /proc/self/status; touch /proxyshim/x 2>&1; "
               "echo rc=$?")
    lines = r.stdout.splitlines()
    assert lines[0] == str(NOBODY)
    for cap in ("CapPrm", "CapEff", "CapBnd"):
        assert "%s:\t0000000000000000" % cap in lines, lines
    assert "Read-only file system" in r.stdout and lines[-1] == "rc=1", r.stdout


def test_init_container_refuses_a_volume_it_cannot_write(workdir):
    vol = volume(workdir, owner=0)
    r, _ = init_container(vol)
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == ("proxyshim-copy: cannot write /shared/libproxyshim.so "
                                         "(is the volume writable by uid %d?)" % NOBODY), r.stderr
    assert os.listdir(vol) == []


def elf(path, *opts):
    return subprocess.run(["readelf", "--wide"] + list(opts) + [path], capture_output=True,
                          text=True, check=True).stdout


def test_the_copied_library_is_stripped_and_keeps_its_exports(copied):
    vol, _ = copied
    lib = os.path.join(vol, "libproxyshim.so")
    sections = elf(lib, "-S")
    assert ".symtab" not in sections and ".debug_info" not in sections, sections
    # every name the version script exports (the hooks and the proxyshim_ API) is still there
    defined = {l.split()[-1].split("@")[0] for l in elf(lib, "--dyn-syms").splitlines()
               if " FUNC " in l and " GLOBAL " in l and " UND " not in l}
    with open(os.path.join(ROOT, "shim", "preload", "libproxyshim.map")) as f:
        script = f.read()
    exported = re.findall(r"^\s*(\w+);", script.split("global:")[1].split("local:")[0], re.M)
    assert len(exported) > 20 and "accept" in exported, exported
    assert sorted(set(exported) - defined) == [], defined
    assert "libproxyshim.so.1" in elf(lib, "-d")  # the SONAME
    n = os.path.getsize(lib)
    unstripped = os.path.join(ROOT, "build", "libproxyshim.so")
    measured("libproxyshim.so in the image (stripped)", "%d bytes" % n +
             (" (make's build/, -g: %d bytes)" % os.path.getsize(unstripped)
              if os.path.exists(unstripped) else ""))
    assert n < 160 * 1024, n
    for f in ("proxyshim", "proxyshim-send", "proxyshim-supervise"):
        assert ".symtab" not in elf(os.path.join(vol, f), "-S"), f


# ---- the legacy nginx ----

class Container:
    """A detached container, removed at the end."""

    def __init__(self, name, *args):
        self.name = name
        t = time.monotonic()
        podman("run", "-d", "--name", name, "--network", "none", *args)
        self.started = time.monotonic() - t

    def pid(self):
        return int(podman("inspect", "--format", "{{.State.Pid}}", self.name).stdout)

    def logs(self):
        r = podman("logs", self.name)
        return r.stdout + r.stderr

    def remove(self):
        podman("rm", "--force", "--time", "2", self.name, check=False)


@pytest.fixture
def containers():
    made = []
    yield made
    for c in made:
        c.remove()


def name(what):
    return "proxyshim-test-%s-%d" % (what, os.getpid())


def until(what, f, timeout=20.0):
    end = time.monotonic() + timeout
    while True:
        out = f()
        if out is not None:
            return out
        assert time.monotonic() < end, "timed out: %s" % what
        time.sleep(0.2)


REQUEST = "GET /x HTTP/1.0\r\n\r\n"


def access_line(c, path):
    """The access log line (the example's log_format: '$remote_addr [...] "$request" $status')."""
    def find():
        lines = [l for l in c.logs().splitlines() if '"GET %s HTTP/1.0"' % path in l]
        return lines or None
    (line,) = until("the access log line for " + path, find)
    return line


def test_legacy_nginx_from_the_volume_logs_the_header_client(copied, containers):
    """The init container's pattern: nginx preloads the library the copy put into the volume
    (mounted read-only, LD_PRELOAD pointing there); proxyshim-send from the volume, inside the
    container, sends a v2 header for 203.0.113.7 over loopback."""
    vol, r = copied
    assert r.returncode == 0, r.stderr
    c = Container(name("nginx-vol"), "-v", vol + ":/shared:ro",
                  "-e", "LD_PRELOAD=/shared/libproxyshim.so", "-e", "PROXYSHIM_TRUSTED=127.0.0.1",
                  LEGACY)
    containers.append(c)
    measured("legacy-nginx container start (podman run -d)", "%.1f s" % c.started)

    def send():
        r = subprocess.run(["podman", "exec", "-i", c.name, "/shared/proxyshim-send", "--src",
                            "203.0.113.7:4711", "127.0.0.1", "8080"], env=ENV, capture_output=True,
                           input=REQUEST.replace("/x", "/vol").encode(), timeout=30)
        return r if r.returncode == 0 else None
    r = until("nginx in the container answers", send)
    assert r.stdout.startswith(b"HTTP/1.1 200"), r.stdout
    assert r.stdout.endswith(b"\r\n\r\nclient 203.0.113.7\n"), r.stdout
    line = access_line(c, "/vol")
    assert line.startswith("203.0.113.7 [") and line.endswith(" 200"), line

    # The wrapper from the volume finds the library beside it, in the same container.
    r = podman("exec", "-e", "LD_PRELOAD=", c.name, "/shared/proxyshim", "--check")
    assert r.stdout.splitlines()[0] == "library=/shared/libproxyshim.so", r.stdout


HAPROXY_CFG = """global
    log stdout format raw local0 info
defaults
    mode tcp
    log global
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend fe
    bind 127.0.0.1:8000
    default_backend be
backend be
    server nginx 127.0.0.1:8080 send-proxy-v2
"""

CLIENT = """
import socket, sys
s = socket.socket()
s.settimeout(5)
s.bind(("127.0.0.77", 0))
s.connect(("127.0.0.1", 8000))
s.sendall(sys.argv[1].encode())
out = b""
while True:
    b = s.recv(4096)
    if not b:
        break
    out += b
sys.stdout.buffer.write(out)
"""


def test_legacy_nginx_as_built_behind_haproxy_logs_the_client(workdir, containers):
    """The example image as built (its own copy of the library, its environment; only the
    trusted address set for this loopback): this machine's HAProxy, run inside the container's
    network namespace, forwards a client from 127.0.0.77 with send-proxy-v2 from 127.0.0.1.
    nginx logs 127.0.0.77, the header's client."""
    assert shutil.which("haproxy"), "haproxy is not installed (tests/deps.sh images installs it)"
    c = Container(name("nginx-haproxy"), "-e", "PROXYSHIM_TRUSTED=127.0.0.1", LEGACY)
    containers.append(c)
    netns = ["nsenter", "--net=/proc/%d/ns/net" % c.pid()]
    cfg = os.path.join(workdir, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(HAPROXY_CFG)
    h = subprocess.Popen(netns + ["haproxy", "-db", "-f", cfg], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        def through():
            r = subprocess.run(netns + ["/usr/bin/python3", "-c", CLIENT,
                                        REQUEST.replace("/x", "/haproxy")],
                               capture_output=True, timeout=20)
            return r if r.returncode == 0 and r.stdout else None
        r = until("HAProxy and nginx in the container answer", through)
    finally:
        h.terminate()
        try:
            h.wait(timeout=5)
        except subprocess.TimeoutExpired:
            h.kill()
            h.wait()
    assert r.stdout.startswith(b"HTTP/1.1 200"), r.stdout
    assert r.stdout.endswith(b"\r\n\r\nclient 127.0.0.77\n"), r.stdout
    line = access_line(c, "/haproxy")
    assert line.startswith("127.0.0.77 [") and line.endswith(" 200"), line

"""docker/: the images are built and run for real by make images (tests/images/, buildah and
podman); here, in make test, the images and manifests are checked by what runs without them.
The Dockerfiles are linted (npm dockerfile-utils) and their build stage's make run on exactly the
files it copies; the legacy-nginx example's nginx config and environment serve for real under
the shim; every Kubernetes object is validated against the Kubernetes schema (npm
kubernetes-models) and checked for the pattern's fields; and the copy entrypoint runs for real,
as a non-root user, into a folder from which a server then runs with the copied library and a
command runs under the copied wrapper's supervised mode (the copied supervisor beside it)."""
import json
import os
import re
import shutil
import subprocess

import pytest

from util import BUILD, LIB, ROOT, SEND, WRAPPER, Proc, free_port, wait_port

DOCKER = os.path.join(ROOT, "docker")
LINT = os.path.join(ROOT, "tests", "docker-lint")
DOCKERFILES = [os.path.join(DOCKER, "Dockerfile"),
               os.path.join(DOCKER, "examples", "legacy-nginx", "Dockerfile")]
MANIFESTS = sorted(os.path.join(DOCKER, "k8s", f) for f in os.listdir(os.path.join(DOCKER, "k8s"))
                   if f.endswith(".yaml"))
ENTRYPOINT = os.path.join(DOCKER, "copy-entrypoint.sh")
NOBODY = 65534
AS_NOBODY = ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups"]
SUPERVISOR = os.path.join(BUILD, "proxyshim-supervise")
# What /proxyshim/ ships and the copy entrypoint copies: (name, built file, mode in the volume).
SHIPPED_FILES = (("libproxyshim.so", LIB, 0o644), ("proxyshim", WRAPPER, 0o755),
                 ("proxyshim-send", SEND, 0o755), ("proxyshim-supervise", SUPERVISOR, 0o755))
SHIPPED = tuple(f for f, _, _ in SHIPPED_FILES)

pytestmark = pytest.mark.apps  # node/npm tooling (linter, schema validator), nginx


@pytest.fixture(scope="module", autouse=True)
def _node_modules():
    assert os.path.isdir(os.path.join(LINT, "node_modules")), \
        "tests/docker-lint/node_modules is missing: run tests/deps.sh (npm ci)"


def node(script, *args):
    return subprocess.run(["node", os.path.join(LINT, script)] + list(args), capture_output=True,
                          text=True, timeout=60)


def json_lines(r):
    return [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]


# ---- Dockerfiles ----

def test_dockerfiles_lint_clean():
    r = node("lint-dockerfiles.js", *DOCKERFILES)
    got = json_lines(r)
    assert [d["file"] for d in got] == DOCKERFILES
    assert [d["diagnostics"] for d in got] == [[], []], r.stdout
    assert r.returncode == 0, r.stderr


def test_the_linter_finds_faults(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("from debian:12\nWORKDIR src\nCMD [\"a\"]\nCMD ['b']\n")
    r = node("lint-dockerfiles.js", str(bad))
    assert r.returncode == 1
    (d,) = json_lines(r)
    assert {x["line"] for x in d["diagnostics"]} == {1, 2, 3, 4}, d


def stages(path):
    """[(FROM line, [instruction lines])] with continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", open(path).read())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append((line, []))
        elif out:
            out[-1][1].append(line)
    return out


def global_args(path):
    """The ARG lines before the first FROM: {name: default}."""
    out = {}
    for line in open(path).read().splitlines():
        line = line.strip()
        if line.upper().startswith("FROM "):
            break
        if line.startswith("ARG "):
            k, _, v = line[4:].partition("=")
            out[k] = v
    return out


def test_delivery_image_is_multi_stage_with_only_proxyshim_in_the_final_stage():
    st = stages(DOCKERFILES[0])
    assert len(st) == 2
    (build_from, build), (final_from, final) = st
    # the base images are build arguments, Debian 12 and busybox by default
    assert build_from == "FROM ${BUILD_IMAGE} AS build" and final_from == "FROM ${RUN_IMAGE}"
    assert global_args(DOCKERFILES[0]) == {"BUILD_IMAGE": "debian:12",
                                            "RUN_IMAGE": "busybox:1.36.1-musl"}
    assert "strip --strip-unneeded /out/libproxyshim.so" in " ".join(build)
    assert any(l.startswith("LABEL ") and "org.opencontainers.image.version=\"${VERSION}\"" in l
               for l in final), final
    assert any(l.startswith("RUN ") and "make " in l for l in build)
    copies = [l for l in final if l.startswith("COPY ")]
    assert copies and all(l.split()[-1].startswith("/proxyshim/") for l in copies), copies
    assert "COPY --from=build /out/ /proxyshim/" in copies
    assert not any(l.startswith(("RUN ", "ADD ")) for l in final), final
    user = [l for l in final if l.startswith("USER ")]
    assert user and user[-1].split()[1].split(":")[0] not in ("0", "root"), user
    assert 'ENTRYPOINT ["/proxyshim/copy-entrypoint.sh"]' in final
    assert 'CMD ["/shared"]' in final
    # every shipped file is built and put into /out, which the final stage takes whole
    (run,) = [l for l in build if l.startswith("RUN ") and re.search(r"\bmake build/", l)]
    make_targets = re.search(r"\bmake (build/[^&]+)", run).group(1).split()
    (cp,) = re.findall(r"\bcp ([^&]+) /out/", run)
    for f in SHIPPED:
        assert "build/" + f in make_targets and "build/" + f in cp.split(), (f, run)


def test_build_stage_builds_from_the_files_it_copies(tmp_path):
    """The build stage's COPY lines and make command, run in a folder holding only what it
    copies: a missing source would fail here as it would in docker build."""
    (_, build), _ = stages(DOCKERFILES[0])
    src = tmp_path / "src"
    src.mkdir()
    for l in build:
        if l.startswith("COPY "):
            parts = l.split()[1:]
            for s in parts[:-1]:
                p = os.path.join(ROOT, s.rstrip("/"))
                dst = src / parts[-1].rstrip("/") if parts[-1] not in ("./", ".") else src / os.path.basename(p)
                if os.path.isdir(p):
                    shutil.copytree(p, dst)
                else:
                    shutil.copy(p, dst)
    (run,) = [l for l in build if l.startswith("RUN ") and re.search(r"\bmake build/", l)]
    make_cmd = re.search(r"\b(make build/[^&]+)", run).group(1).split()
    r = subprocess.run(make_cmd + ["-j2"], cwd=src, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr, r.stderr
    for f in SHIPPED:
        assert os.path.exists(src / "build" / f), f
    r = subprocess.run([str(src / "build" / "proxyshim"), "--trusted", "10.0.0.0/8", "--check"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "PROXYSHIM_TRUSTED=10.0.0.0/8" in r.stdout.splitlines(), r


# ---- the legacy-nginx example ----

def dockerfile_env(path):
    env = {}
    for _, instrs in stages(path):
        for l in instrs:
            if l.startswith("ENV "):
                for k, v in re.findall(r"(\w+)=(\S+)", l[4:]):
                    env[k] = v
    return env


def test_legacy_nginx_dockerfile_preloads_the_copied_library():
    st = stages(DOCKERFILES[1])
    assert [f for f, _ in st] == ["FROM ${PROXYSHIM_IMAGE} AS proxyshim", "FROM ${NGINX_IMAGE}"]
    assert global_args(DOCKERFILES[1]) == {"PROXYSHIM_IMAGE": "proxyshim:latest",
                                            "NGINX_IMAGE": "nginx:1.27"}
    final = st[1][1]
    (cp,) = [l for l in final if l.startswith("COPY --from=proxyshim")]
    _, _, src, dst = cp.split()
    assert src == "/proxyshim/libproxyshim.so"
    env = dockerfile_env(DOCKERFILES[1])
    assert env["LD_PRELOAD"] == dst
    assert env["PROXYSHIM_TRUSTED"] == "10.0.0.0/16"
    assert "COPY nginx.conf /etc/nginx/conf.d/default.conf" in final


def test_legacy_nginx_config_logs_the_client_under_the_shim(procs, tmp_path):
    """The example's nginx.conf, served by this machine's nginx with the example's environment
    (the library and the trusted range swapped for this machine's): the response and the
    access log show the client of the header."""
    assert shutil.which("nginx"), "nginx is not installed (tests/deps.sh installs it)"
    port = free_port()
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    text = open(os.path.join(DOCKER, "examples", "legacy-nginx", "nginx.conf")).read()
    assert "listen 8080;" in text and "$remote_addr" in text
    (conf_d / "default.conf").write_text(text.replace("listen 8080;", "listen 127.0.0.1:%d;" % port))
    for sub in ("logs", "tmp"):
        (tmp_path / sub).mkdir()
    (tmp_path / "nginx.conf").write_text("""
user root;
worker_processes 1;
pid %(d)s/nginx.pid;
error_log stderr warn;
events { worker_connections 64; }
http {
    client_body_temp_path %(d)s/tmp/body;
    proxy_temp_path %(d)s/tmp/proxy;
    fastcgi_temp_path %(d)s/tmp/fastcgi;
    uwsgi_temp_path %(d)s/tmp/uwsgi;
    scgi_temp_path %(d)s/tmp/scgi;
    include %(d)s/conf.d/*.conf;
}
""" % {"d": tmp_path})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXYSHIM_")}
    env.update(dockerfile_env(DOCKERFILES[1]))
    env.update(LD_PRELOAD=LIB, PROXYSHIM_TRUSTED="127.0.0.1", PROXYSHIM_PORTS=str(port))
    p = Proc(["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g",
              "daemon off;"], env=env, log_name="nginx")
    procs.append(p)
    wait_port(port, proc=p)
    r = subprocess.run([SEND, "--src", "203.0.113.7:4711", "127.0.0.1", str(port)],
                       input=b"GET /x HTTP/1.0\r\n\r\n", capture_output=True, timeout=10)
    assert r.returncode == 0, r
    assert r.stdout.startswith(b"HTTP/1.1 200") and r.stdout.endswith(b"\r\n\r\nclient 203.0.113.7\n"), r.stdout
    out = p.wait_output('"GET /x HTTP/1.0" 200')
    (line,) = [l for l in out.splitlines() if '"GET /x HTTP/1.0"' in l]
    assert line.startswith("203.0.113.7 ["), out


# ---- Kubernetes ----

def k8s_objects(*files):
    r = node("validate-k8s.js", *(files or MANIFESTS))
    return r, json_lines(r)


def test_every_kubernetes_object_is_valid():
    r, objs = k8s_objects()
    assert r.returncode == 0, r.stdout + r.stderr
    assert [o["error"] for o in objs] == [None] * len(objs)
    assert sorted(o["kind"] for o in objs) == ["ConfigMap", "Deployment", "NetworkPolicy", "Pod", "Service"]


def test_the_validator_rejects_a_broken_object(tmp_path):
    text = open(os.path.join(DOCKER, "k8s", "deployment.yaml")).read()
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace("containerPort: 8080", 'containerPort: "8080"', 1))
    r, objs = k8s_objects(str(broken))
    assert r.returncode == 1
    assert "containerPort must be integer" in objs[0]["error"], objs[0]
    (tmp_path / "unknown.yaml").write_text("apiVersion: v9\nkind: Nothing\nmetadata: {name: x}\n")
    r, objs = k8s_objects(str(tmp_path / "unknown.yaml"))
    assert r.returncode == 1 and objs[0]["error"] == "unknown apiVersion/kind v9/Nothing"


@pytest.fixture(scope="module")
def k8s():
    _, objs = k8s_objects()
    return {o["kind"]: o["object"] for o in objs}


def env_map(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_service_asks_the_aws_load_balancer_controller_for_proxy_v2(k8s):
    svc = k8s["Service"]
    assert svc["metadata"]["annotations"] == {
        "service.beta.kubernetes.io/aws-load-balancer-type": "external",
        "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
        "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing",
        "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol": "*",
        # the NLB in the trusted subnets, its peers its own addresses (test_k8s.py)
        "service.beta.kubernetes.io/aws-load-balancer-subnets":
            "nlb-subnet-a,nlb-subnet-b,nlb-subnet-c",
        "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes":
            "preserve_client_ip.enabled=false",
    }
    assert svc["spec"]["type"] == "LoadBalancer"
    pod_labels = k8s["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    (port,) = svc["spec"]["ports"]
    assert port["targetPort"] == "http" and port["protocol"] == "TCP"


SECCOMP_PROFILE = os.path.join(DOCKER, "k8s", "proxyshim-supervise-seccomp.json")


def test_supervised_pod_uses_the_shipped_seccomp_profile(k8s):
    """The supervised example: the wrapper as the container's command, a Localhost profile
    named as the shipped file, and nothing a Pod Security "restricted" level refuses."""
    spec = k8s["Pod"]["spec"]
    prof = spec["securityContext"]["seccompProfile"]
    assert prof["type"] == "Localhost"
    assert os.path.basename(prof["localhostProfile"]) == os.path.basename(SECCOMP_PROFILE)
    assert spec["securityContext"]["runAsNonRoot"] is True
    (app,) = spec["containers"]
    sc = app["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert "seccompProfile" not in sc
    cmd = app["command"]
    assert os.path.basename(cmd[0]) == "proxyshim" and "--" in cmd
    ports = {p["name"]: p["containerPort"] for p in app["ports"]}
    env = env_map(app)
    assert env["PROXYSHIM_TRUSTED"] and env["PROXYSHIM_PORTS"] == str(ports["http"])
    assert app["readinessProbe"]["httpGet"]["port"] == "health" and ports["health"] != ports["http"]


def test_supervised_pod_image_recipe_gives_a_wrapper_that_runs(k8s, world_dir):
    """The image recipe in supervised-pod.yaml's comment: the files its COPY --from= line takes
    from the proxyshim image, put into one folder, are enough for the pod's command (the wrapper
    at that folder, run supervised as the pod's user)."""
    text = open(os.path.join(DOCKER, "k8s", "supervised-pod.yaml")).read()
    (copy,) = re.findall(r"^#\s+COPY --from=proxyshim (.+)$", text, re.M)
    *srcs, dst = copy.split()
    built = {f: path for f, path, _ in SHIPPED_FILES}
    assert all(os.path.dirname(s) == "/proxyshim" and os.path.basename(s) in built
               for s in srcs), srcs
    (app,) = k8s["Pod"]["spec"]["containers"]
    assert app["command"][0] == dst.rstrip("/") + "/proxyshim"
    assert k8s["Pod"]["spec"]["securityContext"]["runAsUser"] == NOBODY  # AS_NOBODY below
    folder = os.path.join(world_dir, "proxyshim")
    os.mkdir(folder)
    for s in srcs:
        shutil.copy(built[os.path.basename(s)], folder)
    r = subprocess.run(AS_NOBODY + [os.path.join(folder, "proxyshim"), "--supervise", "--",
                                    "/bin/true"], capture_output=True, text=True, timeout=20,
                       env={"PATH": "/usr/bin:/bin", "PROXYSHIM_TRUSTED": "127.0.0.1"})
    assert r.returncode == 0, r


def test_seccomp_profile_is_the_runtime_default_plus_the_supervised_calls():
    prof = json.load(open(SECCOMP_PROFILE))
    assert (prof["defaultAction"], prof["defaultErrnoRet"]) == ("SCMP_ACT_ERRNO", 1)
    assert prof["architectures"][0] == "SCMP_ARCH_X86_64"
    allowed = {n for r in prof["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and "args" not in r
               for n in r["names"]}
    for n in ("pidfd_getfd", "pidfd_open", "process_vm_readv", "process_vm_writev", "seccomp",
              "accept4", "ioctl", "execve", "prctl", "poll", "signalfd4", "wait4", "read", "write"):
        assert n in allowed, n
    # what the default keeps out stays out
    for n in ("mount", "bpf", "kexec_load", "init_module", "unshare", "setns", "reboot"):
        assert n not in allowed, n
    names = [n for r in prof["syscalls"] for n in r["names"]]
    # a call in two rules only where the default splits it by argument
    assert {n for n in names if names.count(n) > 1} <= {"socket", "personality"}
    assert {k for r in prof["syscalls"] for k in r} <= {"names", "action", "errnoRet", "args"}


# ---- the copy entrypoint, for real, as a non-root user ----

def image_dir(base):
    """/proxyshim/ as the image holds it: root's files, the script beside them."""
    src = os.path.join(base, "image-proxyshim")
    os.mkdir(src)
    for f, path, _ in SHIPPED_FILES:
        shutil.copy(path, os.path.join(src, f))
    shutil.copy(ENTRYPOINT, os.path.join(src, "copy-entrypoint.sh"))
    os.chmod(src, 0o755)
    return src


def volume(base, owner=NOBODY):
    d = os.path.join(base, "shared")
    os.mkdir(d)
    os.chown(d, owner, owner)
    os.chmod(d, 0o755)
    return d


def copy_as_nobody(src, *args, env=None):
    e = {"PATH": "/usr/bin:/bin", "PROXYSHIM_SRC": src}
    e.update(env or {})
    return subprocess.run(AS_NOBODY + ["/bin/sh", os.path.join(src, "copy-entrypoint.sh")] + list(args),
                          env=e, capture_output=True, text=True, timeout=20)


def test_entrypoint_is_a_plain_copy():
    text = open(ENTRYPOINT).read()
    code = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
    assert re.search(r"\bcp\b", code)
    assert not re.search(r"\bcp\s+-\w*[aprR]|--preserve|--archive|\brsync\b|\binstall\s+-p", code), code
    assert os.access(ENTRYPOINT, os.X_OK)


def test_copy_entrypoint_as_nobody_then_serve_from_the_copy(world_dir, procs):
    src = image_dir(world_dir)
    dest = volume(world_dir)
    r = copy_as_nobody(src, dest)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "proxyshim-copy: copied %s into %s\n" % (" ".join(SHIPPED), dest)
    assert sorted(os.listdir(dest)) == sorted(SHIPPED)  # no temporary file left behind
    for f, _, mode in SHIPPED_FILES:
        st = os.stat(os.path.join(dest, f))
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (NOBODY, NOBODY, mode), f
        with open(os.path.join(dest, f), "rb") as a, open(os.path.join(src, f), "rb") as b:
            assert a.read() == b.read(), f

    # The copied wrapper finds the copied library next to itself.
    r = subprocess.run([os.path.join(dest, "proxyshim"), "--check"], capture_output=True,
                       text=True, timeout=10, env={"PATH": "/usr/bin:/bin"})
    assert r.stdout.splitlines()[0] == "library=%s/libproxyshim.so" % dest, r

    # ... and the copied supervisor: a command run supervised from the copy, as the non-root
    # user, has the copied proxyshim-supervise for its parent.
    r = subprocess.run(AS_NOBODY + [os.path.join(dest, "proxyshim"), "--supervise", "--", "/bin/sh",
                                    "-c", "readlink /proc/$PPID/exe"], capture_output=True, text=True,
                       timeout=20, env={"PATH": "/usr/bin:/bin", "PROXYSHIM_TRUSTED": "127.0.0.1"})
    assert (r.returncode, r.stdout) == (0, os.path.join(dest, "proxyshim-supervise") + "\n"), r

    # A server started from the copy, as the same non-root user, rewrites the address.
    www = os.path.join(world_dir, "www")
    os.mkdir(www)
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": os.path.join(dest, "libproxyshim.so"),
           "PROXYSHIM_TRUSTED": "127.0.0.1"}
    p = Proc(AS_NOBODY + ["/usr/bin/python3", "-u", "-m", "http.server", "--bind", "127.0.0.1",
                          "--directory", www, str(port)], env=env, log_name="http-copy")
    procs.append(p)
    wait_port(port, proc=p)
    r = subprocess.run([os.path.join(dest, "proxyshim-send"), "--src", "198.51.100.9:5555",
                        "127.0.0.1", str(port)], input=b"GET /copied HTTP/1.0\r\n\r\n",
                       capture_output=True, timeout=10)
    assert r.returncode == 0, r
    out = p.wait_output('"GET /copied HTTP/1.0"')
    (line,) = [l for l in out.splitlines() if '"GET /copied HTTP/1.0"' in l]
    assert line.startswith("198.51.100.9 - - ["), out


def test_copy_entrypoint_destination_from_variable_and_replaces_old_files(world_dir):
    src = image_dir(world_dir)
    dest = volume(world_dir)
    old = os.path.join(dest, "libproxyshim.so")
    with open(old, "w") as f:
        f.write("an older copy")
    os.chown(old, NOBODY, NOBODY)
    r = copy_as_nobody(src, env={"PROXYSHIM_DEST": dest})
    assert r.returncode == 0, r.stderr
    with open(old, "rb") as a, open(LIB, "rb") as b:
        assert a.read() == b.read()


def test_copy_entrypoint_refuses_a_missing_or_unwritable_volume(world_dir):
    src = image_dir(world_dir)
    r = copy_as_nobody(src, os.path.join(world_dir, "nope"))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == ("proxyshim-copy: %s/nope is not a directory (mount a volume there, or "
                        "give another path)\n" % world_dir)
    rootvol = volume(world_dir, owner=0)
    r = copy_as_nobody(src, rootvol)
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == ("proxyshim-copy: cannot write %s/libproxyshim.so (is the "
                                         "volume writable by uid %d?)" % (rootvol, NOBODY))
    assert os.listdir(rootvol) == []
    # without an argument or PROXYSHIM_DEST: /shared, absent on this machine
    if not os.path.exists("/shared"):
        r = copy_as_nobody(src)
        assert r.returncode == 1 and "/shared is not a directory" in r.stderr

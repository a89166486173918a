"""docker/k8s/, checked by what can run here (no cluster, no image pull):

- the schema: every object is validated against the Kubernetes schema by validate-k8s.js
  (npm kubernetes-models), strictly: a field the schema does not know, misspelt or invented, at
  any level, fails and is named;
- Pod Security "restricted": every pod spec the directory ships passes the restricted level,
  as the rules below implement it from the Kubernetes documentation's list (Pod Security
  Standards) and the pod-security-admission checks that enforce it; plus a read-only root file
  system and resources for every container;
- the wrapper: every app container runs through /proxyshim/proxyshim, which fails closed: with
  the library missing it exits non-zero and the app never runs (run for real below), where
  LD_PRELOAD alone would run the app without the shim;
- trust: PROXYSHIM_TRUSTED and the NetworkPolicy name the NLB's subnets, the same ones, and the
  Service pins the NLB to its subnets;
- the deployment's app command, from a volume filled as the init container fills it, serves the
  ConfigMap's nginx config for real as a non-root user: the header's client in the response and
  the access log, the probe port without a header."""
import copy
import glob
import ipaddress
import json
import os
import re
import shutil
import subprocess

import pytest

from util import BUILD, LIB, ROOT, SEND, WRAPPER, Proc, free_port, wait_port

K8S = os.path.join(ROOT, "docker", "k8s")
VALIDATOR = os.path.join(ROOT, "tests", "docker-lint", "validate-k8s.js")
MANIFESTS = sorted(os.path.join(K8S, f) for f in os.listdir(K8S) if f.endswith(".yaml"))
SUPERVISOR = os.path.join(BUILD, "proxyshim-supervise")
NOBODY = 65534

pytestmark = pytest.mark.apps  # node (the schema validator), nginx


@pytest.fixture(scope="module", autouse=True)
def _node_modules():
    assert os.path.isdir(os.path.join(ROOT, "tests", "docker-lint", "node_modules")), \
        "tests/docker-lint/node_modules is missing: run tests/deps.sh (npm ci)"


def validate(*files):
    r = subprocess.run(["node", VALIDATOR] + list(files), capture_output=True, text=True,
                       timeout=60)
    return r, [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]


@pytest.fixture(scope="module")
def objects():
    r, objs = validate(*MANIFESTS)
    assert r.returncode == 0, r.stdout + r.stderr
    return [(o["file"], o["object"]) for o in objs]


def by_kind(objects, kind):
    (obj,) = [o for _, o in objects if o["kind"] == kind]
    return obj


def pod_templates(objects):
    """(file, kind/name, pod metadata, pod spec) of every workload: a Pod, or the pod template of
    a Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or CronJob."""
    out = []
    for f, o in objects:
        kind = o["kind"]
        if kind == "Pod":
            meta, spec = o["metadata"], o["spec"]
        elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            meta, spec = o["spec"]["template"].get("metadata", {}), o["spec"]["template"]["spec"]
        elif kind == "CronJob":
            t = o["spec"]["jobTemplate"]["spec"]["template"]
            meta, spec = t.get("metadata", {}), t["spec"]
        else:
            continue
        out.append((f, "%s/%s" % (kind, o["metadata"]["name"]), meta, spec))
    return out


def containers(spec):
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(field) or []:
            yield field, c


def env_map(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


# ---- the schema, strictly ----

def write_objects(path, objs):
    """Multi-document YAML from objects (JSON is YAML)."""
    path.write_text("\n---\n".join(json.dumps(o) for o in objs) + "\n")


def rename(d, old, new):
    assert old in d, (old, sorted(d))
    d[new] = d.pop(old)


def test_every_object_is_valid_strictly(objects):
    assert sorted(o["kind"] for _, o in objects) == \
        ["ConfigMap", "Deployment", "NetworkPolicy", "Pod", "Service"]


def test_the_validator_names_each_misspelt_field(objects, tmp_path):
    """The two misspellings the issue found passing, each at the level where it sits, and one
    at another level: each fails, named with its path."""
    dep = copy.deepcopy(by_kind(objects, "Deployment"))
    pod = copy.deepcopy(by_kind(objects, "Pod"))
    (app,) = dep["spec"]["template"]["spec"]["containers"]
    rename(app["securityContext"], "readOnlyRootFilesystem", "readOnlyRootFilesytem")
    rename(pod["spec"]["securityContext"], "runAsNonRoot", "runAsNonRooot")
    rename(dep["spec"], "replicas", "replicaz")
    write_objects(tmp_path / "bad.yaml", [dep, pod])
    r, objs = validate(str(tmp_path / "bad.yaml"))
    assert r.returncode == 1, r.stdout + r.stderr
    errors = {o["kind"]: o["error"] for o in objs}
    assert "unknown field spec.template.spec.containers[0].securityContext.readOnlyRootFilesytem" \
        in errors["Deployment"], errors
    assert "unknown field spec.replicaz" in errors["Deployment"], errors
    assert "unknown field spec.securityContext.runAsNonRooot" in errors["Pod"], errors
    # the two objects unchanged stay valid
    write_objects(tmp_path / "good.yaml", [by_kind(objects, "Deployment"), by_kind(objects, "Pod")])
    r, objs = validate(str(tmp_path / "good.yaml"))
    assert r.returncode == 0 and [o["error"] for o in objs] == [None, None], r.stdout


def test_the_validator_names_an_unknown_field_inside_a_misspelt_object_and_a_map_is_free(
        objects, tmp_path):
    """A misspelt field whose value is an object is named once (its insides are not looked at);
    labels, annotations and ConfigMap data are maps: any key is fine there."""
    svc = copy.deepcopy(by_kind(objects, "Service"))
    svc["metadata"]["annotations"]["example.com/any-key"] = "x"
    svc["metadata"]["labels"] = {"any-label": "x"}
    rename(svc["spec"], "selector", "selectr")
    np = copy.deepcopy(by_kind(objects, "NetworkPolicy"))
    np["spec"]["ingress"][0]["from"][0]["ipBlock"]["cidrs"] = ["192.0.2.0/24"]
    write_objects(tmp_path / "bad.yaml", [svc, np])
    r, objs = validate(str(tmp_path / "bad.yaml"))
    assert r.returncode == 1
    errors = {o["kind"]: o["error"] for o in objs}
    assert errors["Service"] == "unknown field spec.selectr", errors
    assert errors["NetworkPolicy"] == "unknown field spec.ingress[0].from[0].ipBlock.cidrs", errors


def test_the_validator_still_checks_types_and_kinds(objects, tmp_path):
    dep = copy.deepcopy(by_kind(objects, "Deployment"))
    dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    write_objects(tmp_path / "broken.yaml", [dep])
    r, objs = validate(str(tmp_path / "broken.yaml"))
    assert r.returncode == 1
    assert "containerPort must be integer" in objs[0]["error"], objs[0]
    (tmp_path / "unknown.yaml").write_text("apiVersion: v9\nkind: Nothing\nmetadata: {name: x}\n")
    r, objs = validate(str(tmp_path / "unknown.yaml"))
    assert r.returncode == 1 and objs[0]["error"] == "unknown apiVersion/kind v9/Nothing"


# ---- Pod Security "restricted" ----
#
# The restricted level is the baseline level plus its own controls (Kubernetes documentation,
# "Pod Security Standards"; the enforcing code is k8s.io/pod-security-admission/policy). Every
# rule covers containers, initContainers and ephemeralContainers.

RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range"}  # the oldest allowed set: later versions add more
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
SECCOMP_TYPES = {"RuntimeDefault", "Localhost"}
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def restricted_violations(meta, spec):
    """The rules of the restricted level that meta/spec break, one line each ([] = passes)."""
    v = []
    psc = spec.get("securityContext") or {}
    # baseline: HostProcess
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        v.append("spec.securityContext.windowsOptions.hostProcess")
    # baseline: host namespaces
    for f in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(f):
            v.append("spec.%s" % f)
    # restricted: volume types (which also forbids hostPath, the baseline's rule)
    for vol in spec.get("volumes") or []:
        types = set(vol) - {"name"}
        if not types & RESTRICTED_VOLUMES:
            v.append("volume %s: %s" % (vol["name"], ",".join(sorted(types))))
    # baseline: sysctls
    for s in psc.get("sysctls") or []:
        if s["name"] not in SAFE_SYSCTLS:
            v.append("sysctl %s" % s["name"])
    # baseline: AppArmor (annotations and the field)
    for k, val in (meta.get("annotations") or {}).items():
        if k.startswith(APPARMOR_ANNOTATION) and not (val == "runtime/default"
                                                      or val.startswith("localhost/")):
            v.append("annotation %s=%s" % (k, val))
    # baseline: SELinux
    def selinux_bad(o):
        return o and (o.get("type", "") not in SELINUX_TYPES or o.get("user") or o.get("role"))
    if selinux_bad(psc.get("seLinuxOptions")):
        v.append("spec.securityContext.seLinuxOptions")
    if (psc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
        v.append("spec.securityContext.appArmorProfile")
    # restricted: running as non-root (pod or every container true, none false), non-root user
    if psc.get("runAsNonRoot") is False:
        v.append("spec.securityContext.runAsNonRoot false")
    if psc.get("runAsUser") == 0:
        v.append("spec.securityContext.runAsUser 0")
    # restricted: seccomp (pod-level type, else every container's own; Unconfined nowhere)
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in SECCOMP_TYPES:
        v.append("spec.securityContext.seccompProfile.type %s" % pod_seccomp)
    for field, c in containers(spec):
        where = "%s %s" % (field, c["name"])
        sc = c.get("securityContext") or {}
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            v.append(where + ": windowsOptions.hostProcess")
        # baseline: privileged
        if sc.get("privileged"):
            v.append(where + ": privileged")
        # baseline: host ports
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                v.append(where + ": hostPort %s" % p["hostPort"])
        # baseline: /proc mount type
        if sc.get("procMount") not in (None, "Default"):
            v.append(where + ": procMount %s" % sc["procMount"])
        if selinux_bad(sc.get("seLinuxOptions")):
            v.append(where + ": seLinuxOptions")
        if (sc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault",
                                                                   "Localhost"):
            v.append(where + ": appArmorProfile")
        # baseline: probes and lifecycle handlers may not name a host
        handlers = [c.get(p) or {} for p in ("livenessProbe", "readinessProbe", "startupProbe")]
        handlers += [h or {} for h in (c.get("lifecycle") or {}).values()]
        for h in handlers:
            for kind in ("httpGet", "tcpSocket"):
                if (h.get(kind) or {}).get("host"):
                    v.append(where + ": %s.host" % kind)
        # restricted: privilege escalation, explicitly false
        if sc.get("allowPrivilegeEscalation") is not False:
            v.append(where + ": allowPrivilegeEscalation not false")
        # restricted: non-root
        if sc.get("runAsNonRoot") is False or (sc.get("runAsNonRoot") is None
                                               and psc.get("runAsNonRoot") is not True):
            v.append(where + ": runAsNonRoot not true")
        if sc.get("runAsUser") == 0:
            v.append(where + ": runAsUser 0")
        # restricted: seccomp
        ctype = (sc.get("seccompProfile") or {}).get("type")
        if ctype is not None and ctype not in SECCOMP_TYPES:
            v.append(where + ": seccompProfile.type %s" % ctype)
        if ctype is None and pod_seccomp not in SECCOMP_TYPES:
            v.append(where + ": no seccompProfile (nor the pod's)")
        # restricted: capabilities: drop ALL, add nothing but NET_BIND_SERVICE
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            v.append(where + ": capabilities.drop lacks ALL")
        for cap in caps.get("add") or []:
            if cap != "NET_BIND_SERVICE":
                v.append(where + ": capabilities.add %s" % cap)
    return v


def test_every_pod_spec_passes_pod_security_restricted(objects):
    """Including the supervised pod: its seccomp profile is of type Localhost, which the
    restricted level allows (the level does not look at what the profile permits: it is the
    runtime's default plus the calls the supervisor needs, see its test in test_docker.py)."""
    pods = pod_templates(objects)
    assert sorted(name for _, name, _, _ in pods) == ["Deployment/legacy-app",
                                                      "Pod/go-app-supervised"]
    for f, name, meta, spec in pods:
        assert restricted_violations(meta, spec) == [], (f, name)


def test_every_container_has_a_read_only_root_and_resources(objects):
    for f, name, _, spec in pod_templates(objects):
        for field, c in containers(spec):
            sc = c.get("securityContext") or {}
            assert sc.get("readOnlyRootFilesystem") is True, (name, c["name"])
            res = c.get("resources") or {}
            assert {"cpu", "memory"} <= set(res.get("requests") or {}), (name, c["name"])
            assert "memory" in (res.get("limits") or {}), (name, c["name"])


# Each: what is changed in the deployment's pod spec, and the violation it must give.
def _set(path, value):
    def change(meta, spec):
        *parents, last = path
        d = spec
        for p in parents:
            d = d[p] if isinstance(p, int) else d.setdefault(p, {})
        d[last] = value
    return change


def _delete(path):
    def change(meta, spec):
        *parents, last = path
        d = spec
        for p in parents:
            d = d[p]
        del d[last]
    return change


def _annotate(meta, spec):
    meta.setdefault("annotations", {})[APPARMOR_ANNOTATION + "app"] = "unconfined"


APP = ["containers", 0, "securityContext"]
INIT = ["initContainers", 0, "securityContext"]
BREAKS = [
    ("hostNetwork", _set(["hostNetwork"], True),
     "spec.hostNetwork"),
    ("hostPID", _set(["hostPID"], True),
     "spec.hostPID"),
    ("hostIPC", _set(["hostIPC"], True),
     "spec.hostIPC"),
    ("hostPath", _set(["volumes", 0], {"name": "h", "hostPath": {"path": "/"}}),
     "volume h: hostPath"),
    ("nfs", _set(["volumes", 0], {"name": "n", "nfs": {"server": "x", "path": "/"}}),
     "volume n: nfs"),
    ("privileged", _set(APP + ["privileged"], True),
     "containers app: privileged"),
    ("hostPort", _set(["containers", 0, "ports", 0, "hostPort"], 80),
     "containers app: hostPort 80"),
    ("cap add", _set(APP + ["capabilities", "add"], ["SYS_PTRACE"]),
     "containers app: capabilities.add SYS_PTRACE"),
    ("cap drop", _set(INIT + ["capabilities", "drop"], ["NET_RAW"]),
     "initContainers proxyshim: capabilities.drop lacks ALL"),
    ("procMount", _set(APP + ["procMount"], "Unmasked"),
     "containers app: procMount Unmasked"),
    ("seccomp pod", _set(["securityContext", "seccompProfile"], {"type": "Unconfined"}),
     "spec.securityContext.seccompProfile.type Unconfined"),
    ("seccomp container", _set(INIT + ["seccompProfile"], {"type": "Unconfined"}),
     "initContainers proxyshim: seccompProfile.type Unconfined"),
    ("seccomp absent", _delete(["securityContext", "seccompProfile"]),
     "containers app: no seccompProfile (nor the pod's)"),
    ("sysctl", _set(["securityContext", "sysctls"], [{"name": "kernel.msgmax", "value": "1"}]),
     "sysctl kernel.msgmax"),
    ("apparmor annotation", _annotate,
     "annotation %sapp=unconfined" % APPARMOR_ANNOTATION),
    ("apparmor field", _set(APP + ["appArmorProfile"], {"type": "Unconfined"}),
     "containers app: appArmorProfile"),
    ("selinux", _set(["securityContext", "seLinuxOptions"], {"user": "system_u"}),
     "spec.securityContext.seLinuxOptions"),
    ("probe host", _set(["containers", 0, "livenessProbe", "tcpSocket", "host"], "10.0.0.1"),
     "containers app: tcpSocket.host"),
    ("escalation", _delete(INIT + ["allowPrivilegeEscalation"]),
     "initContainers proxyshim: allowPrivilegeEscalation not false"),
    ("nonroot pod", _delete(["securityContext", "runAsNonRoot"]),
     "containers app: runAsNonRoot not true"),
    ("nonroot false", _set(INIT + ["runAsNonRoot"], False),
     "initContainers proxyshim: runAsNonRoot not true"),
    ("root user", _set(APP + ["runAsUser"], 0),
     "containers app: runAsUser 0"),
    ("ephemeral", _set(["ephemeralContainers"], [{"name": "dbg", "image": "busybox"}]),
     "ephemeralContainers dbg: allowPrivilegeEscalation not false"),
]


@pytest.mark.parametrize("what,change,violation", BREAKS, ids=[b[0] for b in BREAKS])
def test_the_restricted_check_catches_each_rule(objects, what, change, violation):
    """The check above is not vacuous: each rule broken in the shipped deployment is caught."""
    (_, _, meta, spec), = [p for p in pod_templates(objects) if p[1].startswith("Deployment/")]
    meta, spec = copy.deepcopy(meta), copy.deepcopy(spec)
    assert restricted_violations(meta, spec) == []
    change(meta, spec)
    assert violation in restricted_violations(meta, spec)


# ---- the wrapper ----

def wrapper_command(container):
    """(the wrapper's path, its options, the app's command) of a container run through the
    wrapper, or None."""
    cmd = (container.get("command") or []) + (container.get("args") or [])
    if not cmd or os.path.basename(cmd[0]) != "proxyshim" or "--" not in cmd:
        return None
    i = cmd.index("--")
    return cmd[0], cmd[1:i], cmd[i + 1:]


def test_every_app_container_runs_through_the_wrapper(objects):
    """The wrapper, not LD_PRELOAD alone: it fails closed. A container that sets LD_PRELOAD
    anyway must say why, and the risk, in a comment of its file."""
    for f, name, _, spec in pod_templates(objects):
        text = open(f).read()
        for c in spec["containers"]:
            w = wrapper_command(c)
            assert w is not None, (name, c["name"], c.get("command"), c.get("args"))
            path, opts, app = w
            assert path == "/proxyshim/proxyshim" and app, (name, w)
            # only options every wrapper has had: the settings go in PROXYSHIM_* variables
            assert opts == [], (name, opts)
            if "LD_PRELOAD" in env_map(c):
                assert re.search(r"^#.*LD_PRELOAD.*(fails open|without the shim)", text, re.M), \
                    (name, "sets LD_PRELOAD without a comment on its risk")


def test_the_init_container_fills_the_folder_the_wrapper_runs_from(objects):
    spec = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    empty = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    (init,) = spec["initContainers"]
    (init_mount,) = [m for m in init["volumeMounts"] if m["name"] in empty]
    # the copy entrypoint's argument is the folder it copies into: the emptyDir
    assert init["args"] == [init_mount["mountPath"]]
    assert "proxyshim" in init["image"] and "command" not in init
    (app,) = spec["containers"]
    (app_mount,) = [m for m in app["volumeMounts"] if m["name"] == init_mount["name"]]
    assert app_mount["readOnly"] is True
    path, _, _ = wrapper_command(app)
    assert os.path.dirname(path) == app_mount["mountPath"]
    assert "LD_PRELOAD" not in env_map(app)
    # the probes use a port the shim leaves alone: they come without a header
    env = env_map(app)
    ports = {p["name"]: p["containerPort"] for p in app["ports"]}
    assert env["PROXYSHIM_PORTS"] == str(ports["http"])
    assert env["PROXYSHIM_VERSION"] == "v2" and env["PROXYSHIM_MODE"] == "strict"
    assert app["readinessProbe"]["httpGet"]["port"] == "health" and ports["health"] != ports["http"]


def as_user(uid):
    return ["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups"]


def app_env(container, **extra):
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    env.update({k: v for k, v in env_map(container).items() if v is not None})
    env.update(extra)
    return env


def test_the_wrapper_fails_closed_when_the_library_is_missing(objects, world_dir):
    """The deployment's app command, its wrapper from a volume the copy left without the library
    (a failed or partial copy, a wrong mount): the wrapper exits 1 naming the library, and the
    app never runs. LD_PRELOAD alone, on the same missing path, runs the app without the shim:
    one ld.so line, exit 0."""
    (app,) = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    path, opts, _ = wrapper_command(app)
    volume = os.path.join(world_dir, "proxyshim")
    os.mkdir(volume)
    for f in (WRAPPER, SUPERVISOR):  # everything the copy brings but the library
        shutil.copy(f, volume)
    os.chmod(volume, 0o755)
    # nothing installed where a wrapper may also look (the multiarch private directory)
    assert glob.glob("/usr/lib/*/proxyshim/libproxyshim.so*") == []
    ran = os.path.join(world_dir, "app-ran")
    os.chmod(world_dir, 0o777)
    cmd = [os.path.join(volume, "proxyshim")] + opts + ["--", "/bin/sh", "-c", "touch " + ran]
    r = subprocess.run(as_user(NOBODY) + cmd, env=app_env(app), capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 1, r
    assert "libproxyshim.so" in r.stderr and r.stderr.startswith("proxyshim: "), r.stderr
    assert not os.path.exists(ran)
    # the LD_PRELOAD-only pattern on the same missing path: the app runs, without the shim
    env = app_env(app, LD_PRELOAD=os.path.join(volume, "libproxyshim.so"))
    r = subprocess.run(as_user(NOBODY) + ["/bin/sh", "-c", "touch " + ran], env=env,
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and os.path.exists(ran), r
    assert "ld.so" in r.stderr and "libproxyshim.so" in r.stderr, r.stderr


NGINX_CONF = """
worker_processes 1;
pid %(d)s/tmp/nginx.pid;
error_log stderr warn;
events { worker_connections 64; }
http {
    client_body_temp_path %(d)s/tmp/client_temp;
    proxy_temp_path %(d)s/tmp/proxy_temp;
    fastcgi_temp_path %(d)s/tmp/fastcgi_temp;
    uwsgi_temp_path %(d)s/tmp/uwsgi_temp;
    scgi_temp_path %(d)s/tmp/scgi_temp;
    include %(d)s/conf.d/*.conf;
}
"""


def test_the_deployment_serves_its_nginx_config_through_the_wrapper(objects, world_dir, procs):
    """The pod as far as it runs here: the volume filled with what the copy brings, the
    ConfigMap's default.conf (ports swapped for free ones), the app container's command and
    environment (the trusted range swapped for loopback), run as the container's user (nobody
    here) with this machine's nginx and a main config like the image's (pid and temp files in
    the writable /tmp). A header from a trusted peer gives its client; the probe port needs no
    header."""
    assert shutil.which("nginx"), "nginx is not installed (tests/deps.sh installs it)"
    spec = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    (app,) = spec["containers"]
    path, opts, argv = wrapper_command(app)
    assert argv[:1] == ["nginx"] and "daemon off;" in argv, argv
    volume = os.path.join(world_dir, "proxyshim")
    os.mkdir(volume)
    for f in (WRAPPER, SUPERVISOR, LIB, SEND):
        shutil.copy(f, volume)
    os.chmod(volume, 0o755)
    conf = by_kind(objects, "ConfigMap")["data"]["default.conf"]
    port, health = free_port(), free_port()
    assert "listen 8080;" in conf and "listen 8081;" in conf
    conf = conf.replace("listen 8080;", "listen 127.0.0.1:%d;" % port)
    conf = conf.replace("listen 8081;", "listen 127.0.0.1:%d;" % health)
    for sub in ("conf.d", "tmp"):
        os.mkdir(os.path.join(world_dir, sub))
    open(os.path.join(world_dir, "conf.d", "default.conf"), "w").write(conf)
    open(os.path.join(world_dir, "nginx.conf"), "w").write(NGINX_CONF % {"d": world_dir})
    os.chown(os.path.join(world_dir, "tmp"), NOBODY, NOBODY)
    env = app_env(app, PROXYSHIM_TRUSTED="127.0.0.1", PROXYSHIM_PORTS=str(port))
    cmd = [os.path.join(volume, "proxyshim")] + opts + ["--"] + argv + [
        "-p", world_dir, "-c", os.path.join(world_dir, "nginx.conf")]
    # its stdout a pipe, as a container's is: nginx opens /dev/stdout for the access log, which
    # as nobody it could not do on the root-owned log file Proc gives it
    p = Proc(as_user(NOBODY) + ["/bin/sh", "-c", '"$@" | cat', "sh"] + cmd, env=env,
             log_name="nginx")
    procs.append(p)
    wait_port(port, proc=p)
    r = subprocess.run([SEND, "--src", "203.0.113.7:4711", "127.0.0.1", str(port)],
                       input=b"GET /x HTTP/1.0\r\n\r\n", capture_output=True, timeout=10)
    assert r.returncode == 0, r
    assert r.stdout.endswith(b"\r\n\r\nclient 203.0.113.7\n"), r.stdout
    out = p.wait_output('"GET /x HTTP/1.0" 200')
    (line,) = [l for l in out.splitlines() if '"GET /x HTTP/1.0"' in l]
    assert line.startswith("203.0.113.7 ["), out
    r = subprocess.run(["curl", "-s", "http://127.0.0.1:%d/healthz" % health],
                       capture_output=True, timeout=10)
    assert r.stdout == b"ok\n", r
    assert "[alert]" not in out and "[emerg]" not in out, out


# ---- trust: the NLB's subnets ----

def trusted(value):
    return [ipaddress.ip_network(c) for c in re.split(r"[,\s]+", value.strip()) if c]


def test_trust_and_network_policy_name_the_nlb_subnets(objects):
    """The same CIDRs in PROXYSHIM_TRUSTED of every workload and in the NetworkPolicy's
    ipBlocks: one subnet per zone, none as wide as a VPC."""
    ranges = []
    for f, name, _, spec in pod_templates(objects):
        for c in spec["containers"]:
            ranges.append(trusted(env_map(c)["PROXYSHIM_TRUSTED"]))
    assert len(ranges) == 2 and ranges[0] == ranges[1], ranges
    nets = ranges[0]
    assert len(nets) >= 2, nets
    assert all(n.prefixlen >= 20 for n in nets), nets  # a subnet, not the VPC
    np = by_kind(objects, "NetworkPolicy")["spec"]
    (rule,) = np["ingress"]
    assert [ipaddress.ip_network(p["ipBlock"]["cidr"]) for p in rule["from"]] == nets
    assert all(set(p) == {"ipBlock"} and set(p["ipBlock"]) == {"cidr"} for p in rule["from"])
    app = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    http = [p["containerPort"] for p in app["ports"] if p["name"] == "http"]
    assert rule["ports"] == [{"protocol": "TCP", "port": http[0]}]
    pod_labels = by_kind(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert np["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert np["policyTypes"] == ["Ingress"]


def test_service_pins_the_nlb_to_its_subnets_without_client_ip_preservation(objects):
    """The peers are the NLB's own addresses only if the NLB lives in the trusted subnets and
    does not preserve the client's address (with it the peers would be the clients)."""
    ann = by_kind(objects, "Service")["metadata"]["annotations"]
    pre = "service.beta.kubernetes.io/aws-load-balancer-"
    subnets = ann[pre + "subnets"].split(",")
    app = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert len(subnets) == len(trusted(env_map(app)["PROXYSHIM_TRUSTED"]))
    assert "preserve_client_ip.enabled=false" in ann[pre + "target-group-attributes"].split(",")
    assert ann[pre + "nlb-target-type"] == "ip" and ann[pre + "proxy-protocol"] == "*"

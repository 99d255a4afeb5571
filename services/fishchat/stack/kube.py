"""A real kube-apiserver (plus kube-controller-manager) on loopback, run the way envtest runs it.

The operator's tests need a genuine API server: CRDs, RBAC, watches and admission behave as in a
cluster, without a kubelet or containers. There is no binary in the registries we can reach, so the
pinned release is compiled from the Go module proxy. `k8s.io/kubernetes` requires its staging modules
(`k8s.io/api`, `k8s.io/client-go`, ...) at v0.0.0 with local replace lines, which a dependent module
cannot use; the wrapper module built here replaces each of them with its published v0.X.Y release,
the list being read from that release's own go.mod. The binaries are cached per version.

The API server keeps its state in a private etcd (same binary as the services' one, other ports),
serves TLS with a self-signed CA made by the openssl CLI, authenticates an admin by client
certificate (group system:masters) and authorizes with RBAC. The controller manager makes
Deployments produce ReplicaSets and Pods objects (nothing runs them: there is no kubelet).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from fishchat.stack.base import (
    HOST,
    Component,
    Ports,
    Process,
    StackError,
    cache_dir,
    port_open,
    run,
    wait_until,
)
from fishchat.stack.etcd import EtcdInstance, ensure_etcd_binary
from fishchat.stack.golang import go_build, go_build_lock, go_env, go_tool
from fishchat.stack.network import ensure_network, network_possible, network_ready, node_network

KUBE_VERSION = "v1.37.2"
KUBE_MODULE = "k8s.io/kubernetes"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
KUBELET = "kubelet"
KUBE_PROXY = "kube-proxy"
SCHEDULER = "kube-scheduler"
BINARIES = (APISERVER, CONTROLLER_MANAGER)
#: Built on demand by the node component (`fishchat.stack.node`, which also runs the scheduler:
#: without a node there is nothing to schedule on), from the same pinned release.
NODE_BINARIES = (KUBELET, KUBE_PROXY, SCHEDULER)

# envtest's defaults: a service CIDR is mandatory, the ServiceAccount admission plugin is off
# because without a token controller it would reject every Pod.
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service: the first address of the range
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "fishchat-admin"
ADMIN_GROUP = "system:masters"

# Soft heap limits: Go otherwise lets an idle API server grow with its watch caches.
APISERVER_MEMORY_LIMIT = "768MiB"
CONTROLLER_MANAGER_MEMORY_LIMIT = "256MiB"


def staging_version(kube_version: str) -> str:
    """k8s.io/kubernetes v1.N.P publishes its staging modules as v0.N.P."""
    major, minor, patch = kube_version.lstrip("v").split(".")
    if major != "1":
        raise ValueError(f"unexpected Kubernetes version {kube_version}")
    return f"v0.{minor}.{patch}"


def kube_binary(name: str) -> Path:
    return cache_dir() / "kube" / "bin" / KUBE_VERSION / name


def _go_output(component: str, args: list[str], cwd: Path, log: Path) -> str:
    """A `go` query whose answer we need (the build's own commands go through `run`)."""
    try:
        result = subprocess.run(
            [go_tool(component, log), *args],
            capture_output=True,
            text=True,
            env={**os.environ, **go_env()},
            cwd=cwd,
            timeout=600,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(component, f"`go {' '.join(args)}` timed out after 600s", log) from exc
    if result.returncode != 0:
        with log.open("a") as out:
            out.write(f"$ go {' '.join(args)}\n{result.stderr}\n")
        raise StackError(component, f"`go {' '.join(args)}` failed: {result.stderr.strip()[:500]}", log)
    return result.stdout


def wrapper_go_mod(component: str, work: Path, log: Path, names: tuple[str, ...] = BINARIES) -> str:
    """The wrapper's go.mod, derived from the pinned k8s.io/kubernetes go.mod.

    Every staging module that Kubernetes both requires and replaces with a local path gets a
    replace to its published release; other replaces and excludes are carried over as they are.
    """
    gomod_path = _go_output(
        component, ["list", "-m", "-f", "{{.GoMod}}", f"{KUBE_MODULE}@{KUBE_VERSION}"], work, log
    )
    upstream = json.loads(_go_output(component, ["mod", "edit", "-json", gomod_path.strip()], work, log))
    required = {r["Path"] for r in upstream.get("Require") or []}
    staging = staging_version(KUBE_VERSION)
    replaces: list[str] = []
    for rule in upstream.get("Replace") or []:
        old, new = rule["Old"], rule["New"]
        if new["Path"].startswith("./staging/"):
            if old["Path"] in required:
                replaces.append(f"\t{old['Path']} => {old['Path']} {staging}")
        elif new.get("Version"):
            old_spec = f"{old['Path']} {old['Version']}" if old.get("Version") else old["Path"]
            replaces.append(f"\t{old_spec} => {new['Path']} {new['Version']}")
        else:
            raise StackError(component, f"{KUBE_MODULE} replaces {old['Path']} by a local path", log)
    if not replaces:
        raise StackError(component, f"no staging replaces found in {KUBE_MODULE} {KUBE_VERSION} go.mod", log)
    excludes = [f"\t{e['Path']} {e['Version']}" for e in upstream.get("Exclude") or []]
    godebug = [f"\t{d['Key']}={d['Value']}" for d in upstream.get("GoDebug") or []]
    sections = [
        "// Generated by fishchat.stack.kube from the go.mod of "
        f"{KUBE_MODULE} {KUBE_VERSION}.\nmodule fishchat.local/stack/kube",
        f"go {upstream['Go']}",
        f"require {KUBE_MODULE} {KUBE_VERSION}",
        "tool (\n" + "".join(f"\t{KUBE_MODULE}/cmd/{name}\n" for name in names) + ")",
        "replace (\n" + "\n".join(replaces) + "\n)",
    ]
    if godebug:
        sections.insert(2, "godebug (\n" + "\n".join(godebug) + "\n)")
    if excludes:
        sections.append("exclude (\n" + "\n".join(excludes) + "\n)")
    return "\n\n".join(sections) + "\n"


def _version_ldflags() -> str:
    """What Kubernetes' own build stamps in, so /version and compatibility checks see the release."""
    minor = KUBE_VERSION.split(".")[1]
    stamp = {
        "gitVersion": KUBE_VERSION,
        "gitMajor": "1",
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.{key}={value}" for key, value in stamp.items()]
    return " ".join(flags)


def ensure_kube_binaries(component: str, log: Path, names: tuple[str, ...] = BINARIES) -> dict[str, Path]:
    """The cached binaries of the pinned release (by default the control plane's), built once."""
    binaries = {name: kube_binary(name) for name in names}
    if all(path.is_file() for path in binaries.values()):
        return binaries
    with go_build_lock(component):
        missing = [name for name, path in binaries.items() if not path.is_file()]
        if not missing:
            return binaries
        began = time.monotonic()
        module_dir = cache_dir() / "kube" / f"build-{KUBE_VERSION}"
        module_dir.mkdir(parents=True, exist_ok=True)
        for leftover in ("go.mod", "go.sum"):  # of an interrupted build: start from scratch
            (module_dir / leftover).unlink(missing_ok=True)
        (module_dir / "go.mod").write_text(wrapper_go_mod(component, module_dir, log, tuple(missing)))
        go_build(
            component,
            module_dir,
            [(f"{KUBE_MODULE}/cmd/{name}", binaries[name]) for name in missing],
            log,
            ldflags=_version_ldflags(),
        )
        with log.open("a") as out:
            took = time.monotonic() - began
            out.write(f"kubernetes {KUBE_VERSION}: build of {', '.join(missing)} took {took:.0f}s\n")
    return binaries


class KubeAPIServer(Component):
    """kube-apiserver + kube-controller-manager + their own etcd; clients use KUBECONFIG."""

    name = "kube"

    @property
    def port(self) -> int:
        return Ports.of(Ports.KUBE_APISERVER)

    @property
    def controller_manager_port(self) -> int:
        return Ports.of(Ports.KUBE_CONTROLLER_MANAGER)

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def advertise_host(self) -> str:
        """Where Pods reach the API server (the `kubernetes` Service's endpoint): the machine's end of
        the node network when there is one (`fishchat.stack.network`), else loopback (no Pods run)."""
        net = node_network()
        return net.host_ip if network_ready(net) else HOST

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def etcd(self) -> EtcdInstance:
        return EtcdInstance(
            self.name,
            "kube-etcd",
            self.workdir,
            Ports.of(Ports.KUBE_ETCD_CLIENT),
            Ports.of(Ports.KUBE_ETCD_PEER),
            durable=False,
        )

    @property
    def apiserver(self) -> Process:
        return Process(self.name, APISERVER, self.workdir)

    @property
    def controller_manager(self) -> Process:
        return Process(self.name, CONTROLLER_MANAGER, self.workdir)

    def install(self) -> None:
        ensure_etcd_binary(self.name, self.install_log)
        ensure_kube_binaries(self.name, self.install_log)

    def start(self) -> None:
        etcd_binary = ensure_etcd_binary(self.name, self.install_log)
        binaries = ensure_kube_binaries(self.name, self.install_log)
        # Find a port conflict before starting anything, so a failure leaves nothing half-up.
        for port, process in [
            (self.etcd.client_port, self.etcd.process),
            (self.etcd.peer_port, self.etcd.process),
            (self.port, self.apiserver),
            (self.controller_manager_port, self.controller_manager),
        ]:
            if not process.alive() and port_open(port):
                raise StackError(self.name, f"port {port} is taken by another process", process.log)
        if network_possible() is None:
            ensure_network(self.name, self.install_log)
        if self._any_alive() and not self._current():
            # Started by an older version of this code (other flags or certificates): start afresh.
            self.stop()
        self._make_pki()
        self._write_kubeconfig()
        self.etcd.start(etcd_binary)
        if not self.apiserver.alive():
            self.apiserver.start(
                self._apiserver_command(binaries[APISERVER]), env={"GOMEMLIMIT": APISERVER_MEMORY_LIMIT}
            )
        wait_until(
            self.name, self._apiserver_ready, 180, self.apiserver.log, self.apiserver.alive, "ready (/readyz)"
        )
        if not self.controller_manager.alive():
            self.controller_manager.start(
                self._controller_manager_command(binaries[CONTROLLER_MANAGER]),
                env={"GOMEMLIMIT": CONTROLLER_MANAGER_MEMORY_LIMIT},
            )
        wait_until(
            self.name,
            self._controller_manager_healthy,
            120,
            self.controller_manager.log,
            self.controller_manager.alive,
            "healthy (/healthz)",
        )
        self._started_for.write_text(self._fingerprint())

    def stop(self) -> None:
        self.controller_manager.stop()
        self.apiserver.stop()
        self.etcd.stop()
        self._started_for.unlink(missing_ok=True)

    def running(self) -> bool:
        alive = self.etcd.alive() and self.apiserver.alive() and self.controller_manager.alive()
        return alive and self._current()

    @property
    def _started_for(self) -> Path:
        return self.workdir / "started-for"

    def _fingerprint(self) -> str:
        """What the running processes were started with: their commands and the certificates' names."""
        commands = [
            self._apiserver_command(kube_binary(APISERVER)),
            self._controller_manager_command(kube_binary(CONTROLLER_MANAGER)),
        ]
        text = json.dumps([[str(arg) for arg in cmd] for cmd in commands] + [self._serving_names()])
        return hashlib.sha256(text.encode()).hexdigest()

    def _current(self) -> bool:
        stamp = self._started_for
        return stamp.is_file() and stamp.read_text() == self._fingerprint()

    def _any_alive(self) -> bool:
        return self.etcd.alive() or self.apiserver.alive() or self.controller_manager.alive()

    def env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig)}

    # --- credentials -------------------------------------------------------------------------

    def _openssl(self, *args: str) -> None:
        run(self.name, ["openssl", *args], self.install_log, cwd=self.pki, timeout=60)

    def _serving_names(self) -> str:
        names = ["IP:127.0.0.1", f"IP:{SERVICE_IP}", "DNS:localhost", "DNS:kubernetes"]
        names += [f"DNS:kubernetes.default{suffix}" for suffix in ("", ".svc", ".svc.cluster.local")]
        if self.advertise_host != HOST:
            names.append(f"IP:{self.advertise_host}")
        return ",".join(names)

    def _make_pki(self) -> None:
        """A CA, serving and client certificates and the service-account key pair, made once per
        recipe (the serving names change when the node network comes or goes)."""
        self.pki.mkdir(parents=True, exist_ok=True)
        wanted = ["ca.crt", "ca.key", "sa.key", "sa.pub", "apiserver.crt", "admin.crt"]
        wanted += ["controller-manager.crt", "kubelet-client.crt"]
        recipe = self.pki / "recipe"
        if all((self.pki / name).is_file() for name in wanted) and (
            recipe.is_file() and recipe.read_text() == self._serving_names()
        ):
            return
        for stale in self.pki.iterdir():
            stale.unlink()
        (self.pki / "openssl.cnf").write_text(
            "[req]\ndistinguished_name = dn\n[dn]\n"
            "[ca]\nbasicConstraints = critical,CA:TRUE\n"
            "keyUsage = critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier = hash\n"
            "[serving]\nbasicConstraints = critical,CA:FALSE\n"
            "keyUsage = critical,digitalSignature,keyEncipherment\nextendedKeyUsage = serverAuth\n"
            f"subjectAltName = {self._serving_names()}\n"
            "[client]\nbasicConstraints = critical,CA:FALSE\n"
            "keyUsage = critical,digitalSignature,keyEncipherment\nextendedKeyUsage = clientAuth\n"
        )
        ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        self._openssl(
            "req", "-x509", *ec_key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
            "-subj", "/CN=fishchat-stack-ca", "-config", "openssl.cnf", "-extensions", "ca",
        )  # fmt: skip
        for name, subject, extensions in [
            ("apiserver", "/CN=kube-apiserver", "serving"),
            ("controller-manager", "/CN=kube-controller-manager", "serving"),
            ("admin", f"/O={ADMIN_GROUP}/CN={ADMIN_USER}", "client"),
            # The API server's identity towards kubelets (logs, exec, port-forward).
            ("kubelet-client", f"/O={ADMIN_GROUP}/CN=kube-apiserver-kubelet-client", "client"),
        ]:
            self.sign(name, subject, extensions)
        # Service-account tokens are signed with RS256 by default, so this key is RSA.
        self._openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key")
        self._openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub")
        recipe.write_text(self._serving_names())

    def sign(self, name: str, subject: str, extensions: str, out_dir: Path | None = None) -> None:
        """A key and a certificate signed by the stack's CA (`extensions`: serving or client)."""
        target = out_dir or self.pki
        target.mkdir(parents=True, exist_ok=True)
        ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        key, csr, crt = (str(target / f"{name}.{ext}") for ext in ("key", "csr", "crt"))
        self._openssl(
            "req", "-new", *ec_key, "-keyout", key, "-out", csr, "-subj", subject, "-config", "openssl.cnf",
        )  # fmt: skip
        self._openssl(
            "x509", "-req", "-in", csr, "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", crt, "-days", "3650",
            "-extfile", "openssl.cnf", "-extensions", extensions,
        )  # fmt: skip

    def _write_kubeconfig(self) -> None:
        def b64(name: str) -> str:
            return base64.b64encode((self.pki / name).read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "fishchat-stack",
                    "cluster": {
                        "server": f"https://{HOST}:{self.port}",
                        "certificate-authority-data": b64("ca.crt"),
                    },
                }
            ],
            "users": [
                {
                    "name": ADMIN_USER,
                    "user": {
                        "client-certificate-data": b64("admin.crt"),
                        "client-key-data": b64("admin.key"),
                    },
                }
            ],
            "contexts": [
                {"name": "fishchat-stack", "context": {"cluster": "fishchat-stack", "user": ADMIN_USER}}
            ],
            "current-context": "fishchat-stack",
            "preferences": {},
        }
        partial = self.kubeconfig.with_suffix(".partial")
        partial.write_text(yaml.safe_dump(config, sort_keys=False))
        partial.chmod(0o600)
        partial.replace(self.kubeconfig)

    # --- processes ---------------------------------------------------------------------------

    def _apiserver_command(self, binary: Path) -> list[str | Path]:
        pki = self.pki
        return [
            binary,
            f"--advertise-address={self.advertise_host}",
            f"--bind-address={HOST}",
            f"--secure-port={self.port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP",
            f"--etcd-servers={self.etcd.client_url}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            # Loopback may not be published as the `kubernetes` Service endpoint (1.37 refuses it);
            # without the node network no Pod runs that would need it.
            f"--endpoint-reconciler-type={'lease' if self.advertise_host != HOST else 'none'}",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]

    def _controller_manager_command(self, binary: Path) -> list[str | Path]:
        pki = self.pki
        kubeconfig = self.kubeconfig
        return [
            binary,
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            # Our client CA is given below; the API server has no request-header (front proxy) CA.
            "--authentication-skip-lookup=true",
            f"--bind-address={HOST}",
            f"--secure-port={self.controller_manager_port}",
            f"--tls-cert-file={pki / 'controller-manager.crt'}",
            f"--tls-private-key-file={pki / 'controller-manager.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            "--profiling=false",
            "--v=1",
        ]

    # --- readiness ---------------------------------------------------------------------------

    def _tls(self, client_cert: bool) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        if client_cert:
            context.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return context

    def _get(self, url: str, client_cert: bool) -> str:
        with urllib.request.urlopen(url, timeout=5.0, context=self._tls(client_cert)) as response:
            return str(response.read().decode())

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One API call as the stack's admin (JSON in, JSON out); {} when the object does not exist."""
        request = urllib.request.Request(
            f"https://{HOST}:{self.port}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={
                "Content-Type": "application/merge-patch+json" if method == "PATCH" else "application/json"
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10.0, context=self._tls(True)) as response:
                result = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return {}
            raise
        return result if isinstance(result, dict) else {}

    def get_json(self, path: str) -> dict[str, Any]:
        return self.api("GET", path)

    def _apiserver_ready(self) -> bool:
        return self._get(f"https://{HOST}:{self.port}/readyz", client_cert=True).strip() == "ok"

    def _controller_manager_healthy(self) -> bool:
        return (
            self._get(f"https://{HOST}:{self.controller_manager_port}/healthz", client_cert=False).strip()
            == "ok"
        )

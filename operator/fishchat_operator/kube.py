"""A small asyncio client for the few Kubernetes calls the operator makes itself.

kopf watches and patches the FishChatCluster objects, but it has no public call for server-side apply
of arbitrary children. The official `kubernetes` client is blocking and would need a thread per call;
this module speaks the REST API directly over aiohttp (kopf's own HTTP library) with kopf's
credentials: server-side apply, get, list and status patches, and nothing else. API errors become
`KubeError` with the API server's own message, so conditions and logs can quote it.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import kopf
import yaml

from fishchat_operator.constants import API_VERSION, FIELD_MANAGER, PLURAL

APPLY_CONTENT_TYPE: Final = "application/apply-patch+yaml"
MERGE_CONTENT_TYPE: Final = "application/merge-patch+json"
REQUEST_TIMEOUT_SECONDS: Final = 30.0


class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else message)
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404


@dataclass(frozen=True)
class ResourceType:
    """Where objects of one kind live in the REST API."""

    api_version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        if self.namespaced:
            if not namespace:
                raise ValueError(f"{self.plural} are namespaced; a namespace is required")
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
        if subresource is not None:
            base += f"/{subresource}"
        return base


# Only the kinds the operator (and its tests) touch; anything else is a programming error.
RESOURCE_TYPES: Final[dict[tuple[str, str], ResourceType]] = {
    ("v1", "ServiceAccount"): ResourceType("v1", "serviceaccounts"),
    ("v1", "ConfigMap"): ResourceType("v1", "configmaps"),
    ("v1", "Service"): ResourceType("v1", "services"),
    ("v1", "Secret"): ResourceType("v1", "secrets"),
    ("v1", "Event"): ResourceType("v1", "events"),
    ("v1", "Pod"): ResourceType("v1", "pods"),
    ("v1", "Namespace"): ResourceType("v1", "namespaces", namespaced=False),
    ("apps/v1", "Deployment"): ResourceType("apps/v1", "deployments"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): ResourceType("autoscaling/v2", "horizontalpodautoscalers"),
    ("policy/v1", "PodDisruptionBudget"): ResourceType("policy/v1", "poddisruptionbudgets"),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): ResourceType(
        "apiextensions.k8s.io/v1", "customresourcedefinitions", namespaced=False
    ),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): ResourceType(
        "rbac.authorization.k8s.io/v1", "clusterroles", namespaced=False
    ),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): ResourceType(
        "rbac.authorization.k8s.io/v1", "clusterrolebindings", namespaced=False
    ),
    (API_VERSION, "FishChatCluster"): ResourceType(API_VERSION, PLURAL),
}


def resource_type(api_version: str, kind: str) -> ResourceType:
    try:
        return RESOURCE_TYPES[(api_version, kind)]
    except KeyError:
        raise ValueError(f"no REST mapping for {api_version} {kind}") from None


def describe(manifest: Mapping[str, Any]) -> str:
    meta = manifest.get("metadata", {})
    return f"{manifest.get('kind')} {meta.get('namespace', '')}/{meta.get('name')}".replace(" /", " ")


Login = Callable[[], kopf.ConnectionInfo | None]


class KubeClient:
    """REST calls with credentials from `login`; a 401 re-logs in once (tokens rotate)."""

    def __init__(self, login: Login) -> None:
        self._login = login
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def close(self) -> None:
        """Closed stays closed: a call still under way at shutdown fails instead of opening a session
        that nobody would close."""
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _ensure_session(self, relogin: bool = False) -> tuple[aiohttp.ClientSession, str]:
        async with self._lock:
            if self._closed:
                raise KubeError(0, "Closed", "the Kubernetes client is closed (the operator is stopping)")
            if relogin or self._session is None or self._info is None:
                info = await asyncio.to_thread(self._login)
                if info is None:
                    raise KubeError(
                        0, "NoCredentials", "no Kubernetes credentials (no service account, no kubeconfig)"
                    )
                if self._session is not None:
                    await self._session.close()
                self._info = info
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
                    headers={**info.as_http_headers(), "User-Agent": "fishchat-operator"},
                    timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
                    trust_env=info.trust_env,
                )
            return self._session, self._info.server.rstrip("/")

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        """One call; returns (HTTP status, decoded JSON) or raises KubeError."""
        for attempt in (1, 2):
            session, server = await self._ensure_session(relogin=attempt == 2)
            data = None if body is None else json.dumps(body)
            headers = {"Accept": "application/json"}
            if data is not None:
                headers["Content-Type"] = content_type
            try:
                async with session.request(
                    method, server + path, params=params, data=data, headers=headers
                ) as response:
                    text = await response.text()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise KubeError(0, "Unreachable", f"API server unreachable: {exc!r}") from exc
            if status == 401 and attempt == 1:
                continue
            payload = json.loads(text) if text else None
            if status >= 400:
                reason = payload.get("reason", "") if isinstance(payload, dict) else ""
                message = payload.get("message", text) if isinstance(payload, dict) else text
                raise KubeError(status, reason or "Error", message)
            return status, payload
        raise AssertionError("unreachable")

    # --- the calls the operator makes -------------------------------------------------------------

    async def apply(
        self, manifest: Mapping[str, Any], field_manager: str = FIELD_MANAGER
    ) -> tuple[dict[str, Any], bool]:
        """Server-side apply; returns the live object and whether this call created it."""
        kind_type = resource_type(manifest["apiVersion"], manifest["kind"])
        meta = manifest["metadata"]
        path = kind_type.path(meta.get("namespace"), meta["name"])
        status, obj = await self.request(
            "PATCH",
            path,
            params={"fieldManager": field_manager, "force": "true"},
            body=manifest,
            content_type=APPLY_CONTENT_TYPE,
        )
        return obj, status == 201

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        try:
            _, obj = await self.request("GET", resource_type(api_version, kind).path(namespace, name))
        except KubeError as error:
            if error.not_found:
                return None
            raise
        return dict(obj)

    async def list_objects(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        _, obj = await self.request("GET", resource_type(api_version, kind).path(namespace), params=params)
        return list(obj.get("items", []))

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        kind_type = resource_type(manifest["apiVersion"], manifest["kind"])
        _, obj = await self.request(
            "POST", kind_type.path(manifest["metadata"].get("namespace")), body=manifest
        )
        return dict(obj)

    async def merge_patch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        path = resource_type(api_version, kind).path(namespace, name, subresource)
        _, obj = await self.request("PATCH", path, body=patch, content_type=MERGE_CONTENT_TYPE)
        return dict(obj)

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Delete; False if it was already gone."""
        try:
            await self.request("DELETE", resource_type(api_version, kind).path(namespace, name))
        except KubeError as error:
            if error.not_found:
                return False
            raise
        return True


def login(settings: kopf.OperatorSettings, kubeconfig: str | None = None) -> kopf.ConnectionInfo | None:
    """An explicit kubeconfig, else the in-cluster service account, else KUBECONFIG or ~/.kube/config."""
    if kubeconfig:
        return kubeconfig_login(kubeconfig)
    in_cluster = service_account_login(settings)
    if in_cluster is not None:
        return in_cluster
    default = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or os.path.expanduser("~/.kube/config")
    return kubeconfig_login(default) if os.path.exists(default) else None


SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def service_account_login(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo | None:
    """The Pod's service account, at the API server address the kubelet puts in the environment.

    As client-go's in-cluster config does: KUBERNETES_SERVICE_HOST/PORT, not the DNS name kopf's own
    handler uses, so the operator also runs where cluster DNS is missing or slow to come up. The
    token is read at each login; kopf logs in again on a 401, which picks up a rotated token.
    """
    token_path = os.path.join(SERVICE_ACCOUNT_DIR, "token")
    if not os.path.exists(token_path):
        return None
    with open(token_path, encoding="utf-8") as handle:
        token = handle.read().strip()
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if host and port:
        server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    else:
        server = "https://kubernetes.default.svc"
    namespace_path = os.path.join(SERVICE_ACCOUNT_DIR, "namespace")
    namespace = None
    if os.path.exists(namespace_path):
        with open(namespace_path, encoding="utf-8") as handle:
            namespace = handle.read().strip() or None
    ca_path = os.path.join(SERVICE_ACCOUNT_DIR, "ca.crt")
    return kopf.ConnectionInfo(
        server=server,
        ca_path=ca_path if os.path.exists(ca_path) else None,
        token=token or None,
        default_namespace=namespace,
        trust_env=settings.networking.trust_env,
    )


def kubeconfig_login(path: str) -> kopf.ConnectionInfo:
    """Credentials of the current context of one kubeconfig file (token or client certificate).

    Relative file references are resolved against the kubeconfig's folder, as kubectl does.
    Exec and auth-provider plugins are not supported: use a token or a certificate.
    """
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError) as error:
        raise kopf.LoginError(f"cannot read kubeconfig {path}: {error}") from error

    def named(section: str, name: str) -> dict[str, Any]:
        for item in config.get(section) or []:
            if item.get("name") == name:
                return dict(item.get(section[:-1]) or {})
        raise kopf.LoginError(f"kubeconfig {path} has no {section[:-1]} named {name!r}")

    def file(value: str | None) -> str | None:
        return None if not value else value if os.path.isabs(value) else os.path.join(base, value)

    current = config.get("current-context")
    if not current:
        raise kopf.LoginError(f"kubeconfig {path} has no current-context")
    context = named("contexts", current)
    cluster = named("clusters", context.get("cluster", ""))
    user = named("users", context.get("user", ""))
    token = user.get("token")
    if not token and user.get("tokenFile"):
        with open(file(user["tokenFile"]) or "", encoding="utf-8") as handle:
            token = handle.read().strip()
    return kopf.ConnectionInfo(
        server=cluster.get("server", ""),
        ca_path=file(cluster.get("certificate-authority")),
        ca_data=cluster.get("certificate-authority-data"),
        insecure=cluster.get("insecure-skip-tls-verify"),
        certificate_path=file(user.get("client-certificate")),
        certificate_data=user.get("client-certificate-data"),
        private_key_path=file(user.get("client-key")),
        private_key_data=user.get("client-key-data"),
        username=user.get("username"),
        password=user.get("password"),
        token=token,
        default_namespace=context.get("namespace"),
    )

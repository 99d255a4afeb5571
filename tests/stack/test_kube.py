"""Smoke: the stack's kube-apiserver (and controller manager) through the `kubernetes` Python client.

What the operator relies on: CRDs get Established and serve custom objects; the controller manager
turns a Deployment into a ReplicaSet.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

GROUP = "smoke.fishchat.io"
VERSION = "v1"


@pytest.fixture
def api(stack_env: dict[str, str]) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=stack_env["KUBECONFIG"])
    try:
        yield api_client
    finally:
        api_client.close()


def _eventually(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not within {timeout:.0f}s"
        time.sleep(0.2)


def _crd(plural: str, kind: str) -> client.V1CustomResourceDefinition:
    spec_schema = client.V1JSONSchemaProps(
        type="object",
        properties={
            "replicas": client.V1JSONSchemaProps(type="integer", minimum=0),
            "image": client.V1JSONSchemaProps(type="string"),
        },
        required=["replicas"],
    )
    return client.V1CustomResourceDefinition(
        api_version="apiextensions.k8s.io/v1",
        kind="CustomResourceDefinition",
        metadata=client.V1ObjectMeta(name=f"{plural}.{GROUP}"),
        spec=client.V1CustomResourceDefinitionSpec(
            group=GROUP,
            scope="Namespaced",
            names=client.V1CustomResourceDefinitionNames(plural=plural, singular=kind.lower(), kind=kind),
            versions=[
                client.V1CustomResourceDefinitionVersion(
                    name=VERSION,
                    served=True,
                    storage=True,
                    schema=client.V1CustomResourceValidation(
                        open_apiv3_schema=client.V1JSONSchemaProps(
                            type="object", properties={"spec": spec_schema}
                        )
                    ),
                )
            ],
        ),
    )


def test_crd_established_and_custom_object_round_trip(api: client.ApiClient) -> None:
    suffix = uuid.uuid4().hex[:8]
    plural, kind = f"probes{suffix}", f"Probe{suffix}"
    crd_name = f"{plural}.{GROUP}"
    extensions = client.ApiextensionsV1Api(api)
    objects = client.CustomObjectsApi(api)
    extensions.create_custom_resource_definition(_crd(plural, kind))
    try:

        def established() -> bool:
            crd = extensions.read_custom_resource_definition(crd_name)
            conditions = (crd.status and crd.status.conditions) or []
            return any(c.type == "Established" and c.status == "True" for c in conditions)

        _eventually(established, f"CRD {crd_name} Established")

        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": "gateway"},
            "spec": {"replicas": 3, "image": "fishchat/gateway:smoke"},
        }
        created = cast(
            dict[str, Any], objects.create_namespaced_custom_object(GROUP, VERSION, "default", plural, body)
        )
        assert created["metadata"]["uid"]

        read = cast(
            dict[str, Any], objects.get_namespaced_custom_object(GROUP, VERSION, "default", plural, "gateway")
        )
        assert read["spec"] == {"replicas": 3, "image": "fishchat/gateway:smoke"}
        assert read["metadata"]["uid"] == created["metadata"]["uid"]

        # The structural schema is enforced by the server.
        invalid = {**body, "metadata": {"name": "bad"}, "spec": {"replicas": -1}}
        with pytest.raises(ApiException) as rejected:
            objects.create_namespaced_custom_object(GROUP, VERSION, "default", plural, invalid)
        assert rejected.value.status == 422

        objects.delete_namespaced_custom_object(GROUP, VERSION, "default", plural, "gateway")

        def gone() -> bool:
            try:
                objects.get_namespaced_custom_object(GROUP, VERSION, "default", plural, "gateway")
            except ApiException as exc:
                if exc.status == 404:
                    return True
                raise
            return False

        _eventually(gone, "custom object deleted", timeout=30)
    finally:
        extensions.delete_custom_resource_definition(crd_name)


def test_controller_manager_turns_deployment_into_replicaset(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    apps = client.AppsV1Api(api)
    namespace = f"smoke-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    try:
        labels = {"app": "router"}
        template = client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels=labels),
            spec=client.V1PodSpec(
                containers=[client.V1Container(name="router", image="fishchat/router:smoke")]
            ),
        )
        deployment = client.V1Deployment(
            metadata=client.V1ObjectMeta(name="router"),
            spec=client.V1DeploymentSpec(
                replicas=2, selector=client.V1LabelSelector(match_labels=labels), template=template
            ),
        )
        apps.create_namespaced_deployment(namespace, deployment)

        def replicaset_with_pods() -> bool:
            sets = apps.list_namespaced_replica_set(namespace).items
            pods = core.list_namespaced_pod(namespace).items
            return len(sets) == 1 and sets[0].spec.replicas == 2 and len(pods) == 2

        _eventually(replicaset_with_pods, "ReplicaSet with 2 Pods from the Deployment")
    finally:
        core.delete_namespace(namespace)

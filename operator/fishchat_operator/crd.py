"""The FishChatCluster CustomResourceDefinition, generated from the spec and status types.

`crds/fishchatcluster.yaml` is this module's output (`python -m fishchat_operator.crd`), and a unit
test fails when the file and the types drift apart. Generating it keeps the API server's defaults and
validation identical to the operator's own parsing.
"""

from __future__ import annotations

import sys
from typing import Any

from fishchat_operator import yamlio
from fishchat_operator.constants import (
    API_VERSION,
    CATEGORIES,
    CRD_NAME,
    GROUP,
    KIND,
    LABEL_NAME,
    LABEL_PART_OF,
    LIST_KIND,
    PART_OF,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
)
from fishchat_operator.model import ClusterSpec
from fishchat_operator.schema import openapi
from fishchat_operator.status import ClusterStatus

# Children are named <name>-<role>; a Service name is a DNS-1035 label of at most 63 characters and
# the longest role suffix is "-register" (9), so the cluster name may use 54.
MAX_NAME_LENGTH = 54
NAME_RULE = {
    "rule": f"size(self.metadata.name) <= {MAX_NAME_LENGTH} && "
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
    "message": f"metadata.name must start with a letter, use only a-z, 0-9 and '-', and have at most "
    f"{MAX_NAME_LENGTH} characters: the cluster's Services are named <name>-<role>",
}


def crd() -> dict[str, Any]:
    spec_schema = {"description": ClusterSpec.__doc__, **openapi(ClusterSpec, path="spec")}
    status_schema = {
        "description": "What the operator observed at its last reconcile.",
        **openapi(ClusterStatus),
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {LABEL_NAME: "fishchat-operator", LABEL_PART_OF: PART_OF},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": LIST_KIND,
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.roles.access.replicas",
                            "statusReplicasPath": ".status.roles.access.replicas",
                            "labelSelectorPath": ".status.accessSelector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                            "description": "Whether every role is ready and the backends are provisioned.",
                        },
                        {
                            "name": "Access",
                            "type": "string",
                            "jsonPath": ".status.accessReady",
                            "description": "Ready/desired access pods.",
                        },
                        {
                            "name": "Connections",
                            "type": "integer",
                            "jsonPath": ".status.connections",
                            "description": "Live client connections over all access pods.",
                        },
                        {
                            "name": "Version",
                            "type": "string",
                            "jsonPath": ".spec.version",
                            "description": "FishChat version.",
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A FishChat chat cluster: every role as a Deployment, "
                            "plus its Kafka topics and HBase table, reconciled by fishchat-operator.",
                            "required": ["spec"],
                            "x-kubernetes-validations": [NAME_RULE],
                            "properties": {
                                "apiVersion": {
                                    "type": "string",
                                    "description": f"The API version, {API_VERSION}.",
                                },
                                "kind": {"type": "string", "description": f"The kind, {KIND}."},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd() -> str:
    header = (
        "# Generated by `python -m fishchat_operator.crd` from the types in\n"
        "# operator/fishchat_operator/{model,status}.py.\n"
        "# Do not edit by hand; change the types and regenerate.\n"
    )
    return header + yamlio.dump(crd())


def main() -> int:
    sys.stdout.write(render_crd())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

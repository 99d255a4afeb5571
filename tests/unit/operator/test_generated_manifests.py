"""Files generated from the operator's types stay identical to their generator's output.

Regenerate with `.venv/bin/python -m fishchat_operator.manifests` and review the diff.
"""

from __future__ import annotations

import pytest

from fishchat_operator import rbac, yamlio
from fishchat_operator.manifests import drifted, generated, repo_root


def test_generated_files_match_their_generator() -> None:
    stale = drifted(repo_root())
    assert not stale, (
        f"{', '.join(map(str, stale))} differ from the generator; "
        "run `.venv/bin/python -m fishchat_operator.manifests` and review the diff"
    )


def test_plain_cluster_role_holds_exactly_the_rules() -> None:
    role = yamlio.load((repo_root() / "operator" / "rbac" / "clusterrole.yaml").read_text())
    assert role["kind"] == "ClusterRole"
    assert role["rules"] == [rule.to_manifest() for rule in rbac.RULES]


def test_rules_never_grant_what_the_operator_must_not_have() -> None:
    for rule in rbac.RULES:
        assert "secrets" not in rule.resources, rule
        assert "*" not in rule.verbs and "*" not in rule.resources, rule
        assert not {"deletecollection", "escalate", "bind", "impersonate"} & set(rule.verbs), rule
        # Children go with their owner (garbage collection); only the access HPA is removed earlier,
        # when autoscaling stops delegating to it.
        if "delete" in rule.verbs:
            assert rule.resources == ("horizontalpodautoscalers",), rule
        assert "rbac.authorization.k8s.io" not in rule.api_groups, rule


def test_cluster_scoped_rules_are_only_about_cluster_scoped_objects() -> None:
    # Anything else must be grantable per namespace (a RoleBinding) when the operator watches only some.
    cluster_resources = {res for r in rbac.cluster_rules() for res in r.resources}
    assert cluster_resources == {"namespaces", "customresourcedefinitions"}
    assert set(rbac.namespaced_rules()) | set(rbac.cluster_rules()) == set(rbac.RULES)


@pytest.mark.parametrize("path", sorted(str(p) for p in generated(repo_root()) if p.suffix != ".json"))
def test_generated_files_say_they_are_generated(path: str) -> None:
    head = "".join((repo_root() / path).read_text().splitlines(keepends=True)[:3])
    assert "python -m fishchat_operator" in head, f"{path} does not name its generator"

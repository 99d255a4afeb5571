"""The access autoscaling rules (`fishchat_operator.autoscaling`), as a table of situations.

Each case starts from a memory built by earlier ticks (the replicas the autoscaler last saw, when
its watch began, the needs it saw) and checks the replicas `decide()` asks for, its action and the
gist of its reason. The loop around it (Prometheus, the scale subresource, pod deletion costs) is
tested against the real API server and Prometheus in tests/operator/test_operator_autoscaling.py.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from fishchat_operator.autoscaling import (
    MAX_DELETION_COST,
    Action,
    Measurement,
    Memory,
    decide,
    deletion_costs,
    measurement_from,
    need_for,
    render_query,
)
from fishchat_operator.model import AutoscalingSpec, Cluster, PrometheusSpec, parse_cluster

POLICY = AutoscalingSpec(
    enabled=True,
    min_replicas=2,
    max_replicas=8,
    target_connections_per_pod=100,
    scale_down_step=1,
    scale_down_window_seconds=60,
)
NOW = 1000.0


def watched(replicas: int, since: float = NOW - 120, needs: tuple[tuple[float, int], ...] = ()) -> Memory:
    """The memory of an autoscaler that has watched `replicas` since `since`, having seen `needs`."""
    return Memory(needs=needs, since=since, replicas=replicas)


def m(total: int, **per_pod: int) -> Measurement:
    return Measurement(total=total, per_pod=per_pod)


@dataclass(frozen=True)
class Case:
    replicas: int
    measurement: Measurement | None
    memory: Memory
    expect: int
    action: Action
    says: str
    settled: bool = True
    policy: AutoscalingSpec = POLICY


CASES = {
    # --- rise
    "rise: scaled up at once to the need": Case(
        3, m(450), watched(3), 5, Action.SCALE_UP, "scaling up from 3"
    ),
    "rise: at once even inside the window": Case(
        3, m(450), watched(3, since=NOW - 1), 5, Action.SCALE_UP, "scaling up"
    ),
    "rise: exactly at target is enough": Case(3, m(300), watched(3), 3, Action.HOLD, "need 3 pods"),
    "rise: one connection over needs one more pod": Case(3, m(301), watched(3), 4, Action.SCALE_UP, "need 4"),
    "rise: capped at maxReplicas": Case(3, m(5000), watched(3), 8, Action.SCALE_UP, "need 8 pods"),
    "rise: scale-up may use an incomplete measurement": Case(
        3, Measurement(450, {"a": 450}, unmeasured=("b",)), watched(3), 5, Action.SCALE_UP, "scaling up"
    ),
    # --- fall
    "fall inside the window: held": Case(
        5, m(120), watched(5, since=NOW - 30), 5, Action.HOLD, "waits for the 60s window"
    ),
    "fall after the window: one step": Case(
        5, m(120), watched(5, needs=((NOW - 50, 2),)), 4, Action.SCALE_DOWN, "scaling down from 5 to 4"
    ),
    "fall: a high need within the window holds": Case(
        5, m(120), watched(5, needs=((NOW - 20, 5),)), 5, Action.HOLD, "5 pods were needed within"
    ),
    "fall: a high need older than the window is forgotten": Case(
        5, m(120), watched(5, needs=((NOW - 61, 5),)), 4, Action.SCALE_DOWN, "scaling down"
    ),
    "fall: down to the highest need in the window, not below": Case(
        6,
        m(120),
        watched(6, needs=((NOW - 30, 5),)),
        5,
        Action.SCALE_DOWN,
        "from 6 to 5",
        policy=replace(POLICY, scale_down_step=3),
    ),
    "fall: a step removes at most scaleDownStep": Case(
        8, m(0), watched(8), 6, Action.SCALE_DOWN, "from 8 to 6", policy=replace(POLICY, scale_down_step=2)
    ),
    "fall: waits for the previous step to drain": Case(
        5, m(120), watched(5), 5, Action.HOLD, "previous step's pods to drain", settled=False
    ),
    "fall: not while some ready pod reports nothing": Case(
        5, Measurement(120, {"a": 120}, unmeasured=("b",)), watched(5), 5, Action.HOLD, "report nothing (b)"
    ),
    "fall: a zero window scales down at once": Case(
        5,
        m(120),
        watched(5, since=NOW),
        4,
        Action.SCALE_DOWN,
        "from 5 to 4",
        policy=replace(POLICY, scale_down_window_seconds=0),
    ),
    # --- missing data
    "missing data: keeps the replicas": Case(
        5, None, watched(5), 5, Action.HOLD, "no measurement: keeping 5 pods"
    ),
    "missing data: never down to min, however long": Case(
        8, None, watched(8, since=NOW - 10_000), 8, Action.HOLD, "keeping 8 pods"
    ),
    # --- bounds
    "bounds: zero connections need minReplicas": Case(
        3, m(0), watched(3), 2, Action.SCALE_DOWN, "need 2 pods"
    ),
    "bounds: below min is raised at once, even without data": Case(
        1, None, watched(1), 2, Action.SCALE_UP, "outside minReplicas 2..maxReplicas 8"
    ),
    "bounds: above max is lowered at once": Case(
        12, m(100), watched(12, since=NOW - 1), 8, Action.SCALE_DOWN, "exceed maxReplicas 8"
    ),
    "bounds: minReplicas holds when the need is lower": Case(2, m(10), watched(2), 2, Action.HOLD, "need 2"),
    # --- manual scale
    "manual scale up: held for a window": Case(
        7, m(120), watched(4, needs=((NOW - 50, 2),)), 7, Action.HOLD, "outside the autoscaler; the window"
    ),
    "manual scale down below the need: raised again": Case(
        3, m(650), watched(5), 7, Action.SCALE_UP, "changed to 3 outside the autoscaler"
    ),
    "first tick: the window starts now": Case(
        5, m(120), Memory(), 5, Action.HOLD, "waits for the 60s window"
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_decision(name: str) -> None:
    case = CASES[name]
    decision = decide(case.policy, case.replicas, case.measurement, case.memory, NOW, settled=case.settled)
    assert (decision.replicas, decision.action) == (case.expect, case.action), decision.reason
    assert case.says in decision.reason


def test_a_scale_restarts_the_window_and_is_remembered() -> None:
    up = decide(POLICY, 3, m(450), watched(3), NOW)
    assert up.memory == Memory(since=NOW, replicas=5)
    # The next tick sees the new replicas as its own: no "outside" restart, and the window runs on.
    later = decide(POLICY, 5, m(120), up.memory, NOW + 30)
    assert later.action is Action.HOLD and "outside" not in later.reason
    after = decide(POLICY, 5, m(120), later.memory, NOW + 61)
    assert (after.action, after.replicas) == (Action.SCALE_DOWN, 4)


def test_missing_data_restarts_the_window() -> None:
    gap = decide(POLICY, 5, None, watched(5), NOW)
    assert gap.memory.since == NOW and gap.memory.needs == ()
    back = decide(POLICY, 5, m(120), gap.memory, NOW + 30)
    assert back.action is Action.HOLD and "window" in back.reason
    assert decide(POLICY, 5, m(120), back.memory, NOW + 61).action is Action.SCALE_DOWN


def test_a_dip_shorter_than_the_window_changes_nothing() -> None:
    memory, replicas = watched(5), 5
    loads = [450, 450, 100, 100, 450, 100, 100, 100]  # one tick every 20 s; the window is 60 s
    actions = []
    for tick, load in enumerate(loads):
        decision = decide(POLICY, replicas, m(load), memory, NOW + 20 * tick)
        memory, replicas = decision.memory, decision.replicas
        actions.append(decision.action)
    # 100 connections need 2 pods; the 450 at tick 4 holds the scale-down until tick 4 + 60 s.
    assert actions == [Action.HOLD] * 7 + [Action.SCALE_DOWN]


def test_need_is_ceil_of_connections_over_target_within_bounds() -> None:
    assert [need_for(POLICY, n) for n in (0, 1, 200, 201, 799, 800, 801, 10**9)] == [2, 2, 2, 3, 8, 8, 8, 8]


def test_measurement_from_samples() -> None:
    samples = [({"pod": "a"}, 10.0), ({"pod": "b"}, 0.0), ({"pod": "c"}, float("nan")), ({"pod": "d"}, -1.0)]
    got = measurement_from(samples, "pod", ready_pods=["a", "b", "e"], live_pods=["a", "b", "c", "d", "e"])
    assert got == Measurement(total=10, per_pod={"a": 10, "b": 0}, unmeasured=("e",))
    # A query without the pod label still gives the total, but no per-pod view to check or rank.
    assert measurement_from([({}, 42.0)], "pod", ["a"], ["a"]) == Measurement(total=42)
    assert measurement_from([], "pod", ["a"], ["a"]) is None
    assert measurement_from([({"pod": "a"}, float("inf"))], "pod", ["a"], ["a"]) is None


def test_a_draining_pods_count_is_not_added_to_the_clients_it_moved() -> None:
    # `b` is being deleted: its 4 clients moved to `a` (now 9), but its last scraped count is still 4.
    samples = [({"pod": "a"}, 9.0), ({"pod": "b"}, 4.0), ({"pod": "gone"}, 3.0)]
    assert measurement_from(samples, "pod", ready_pods=["a"], live_pods=["a"]) == Measurement(
        total=9, per_pod={"a": 9}
    )
    # Only series of pods that are no longer live: nothing to use, so the replicas stay.
    assert measurement_from([({"pod": "b"}, 4.0)], "pod", ["a"], ["a"]) is None


def test_deletion_costs_are_connection_counts_within_int32() -> None:
    assert deletion_costs({"a": 3, "b": 0, "c": 2**40}) == {"a": 3, "b": 0, "c": MAX_DELETION_COST}


def cluster(query: str = PrometheusSpec().query) -> Cluster:
    spec = {
        "backends": {
            "kafka": {"bootstrapServers": ["k:9092"]},
            "hbase": {"thriftHost": "h"},
            "redis": {"url": "redis://r"},
            "mariadb": {"host": "m", "credentialsSecret": {"name": "s"}},
            "etcd": {"endpoints": ["http://e:2379"]},
        },
        "autoscaling": {"enabled": True, "prometheus": {"query": query}},
    }
    return parse_cluster({"metadata": {"name": "demo", "namespace": "chat", "uid": "u"}, "spec": spec})


def test_query_template() -> None:
    assert render_query(PrometheusSpec().query, cluster()) == (
        'sum by (pod) (fishchat_access_connections{namespace="chat", pod=~"demo-access-[a-z0-9]+-[a-z0-9]+"})'
    )
    assert render_query('sum(x{c="$cluster"}) * $$1', cluster()) == 'sum(x{c="demo"}) * $1'
    with pytest.raises(ValueError, match=r"uses \$pod; only \$namespace, \$cluster and \$pods"):
        render_query('x{pod=~"$pod"}', cluster())
    with pytest.raises(ValueError, match="stray"):
        render_query("x $ y", cluster())

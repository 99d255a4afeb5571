"""Access autoscaling decisions: how many access pods the live connection count asks for, and when.

Pure: `decide()` takes the policy (`spec.autoscaling`), the replicas now, one measurement (or none)
and what earlier ticks remembered, and returns the replicas to set, why, and what to remember. The
loop that measures and writes lives in `autoscaler.py`. The rules:

- **Need.** ceil(connections / targetConnectionsPerPod), within minReplicas..maxReplicas.
- **Up at once.** A need above the current replicas is set at the next tick.
- **Down slowly.** A scale-down follows the highest need seen during the last
  scaleDownWindowSeconds (the stabilisation window: a dip shorter than the window changes nothing),
  only once the window has been watched in full, removes at most scaleDownStep pods per step, and
  waits until the previous step's pods have drained and gone.
- **Missing data keeps the replicas.** No measurement (Prometheus unreachable, a bad query, no
  series) never scales, and restarts the window; a measurement that lacks some ready pods may scale
  up (it can only count too few) but not down.
- **Bounds** apply at once, whatever the data: replicas below minReplicas or above maxReplicas are
  moved inside.
- **A scale nobody here made** (`kubectl scale fcc/<name>`, another controller) is taken as the new
  current value and restarts the window, so a manual scale-up holds for at least one window.
"""

from __future__ import annotations

import enum
import math
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from fishchat_operator.model import AutoscalingSpec, Cluster

#: Pod deletion costs are int32 (controller.kubernetes.io/pod-deletion-cost).
MAX_DELETION_COST = 2**31 - 1


@dataclass(frozen=True)
class Measurement:
    """Logged-in connections as Prometheus reported them at one instant.

    `per_pod` maps pod name to its count when the query groups by pod (empty otherwise);
    `unmeasured` names ready access pods that have no series (not scraped yet, or not scraped at all).
    """

    total: int
    per_pod: Mapping[str, int] = field(default_factory=dict)
    unmeasured: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.unmeasured


@dataclass(frozen=True)
class Memory:
    """What the autoscaler keeps between ticks of one cluster (in memory: a restart starts afresh,
    which only delays the next scale-down by one window)."""

    #: (time, need) of every measurement since `since`, oldest first, trimmed to the window.
    needs: tuple[tuple[float, int], ...] = ()
    #: When the current watch began (first tick, or the last scale / outside scale): a scale-down needs
    #: a full window of needs after it.
    since: float | None = None
    #: The replicas this autoscaler last saw or set; anything else is someone else's scale.
    replicas: int | None = None


class Action(enum.StrEnum):
    HOLD = "hold"
    SCALE_UP = "up"
    SCALE_DOWN = "down"


@dataclass(frozen=True)
class Decision:
    replicas: int
    action: Action
    reason: str
    memory: Memory
    #: The need of this tick's measurement (None without one).
    need: int | None = None


def need_for(policy: AutoscalingSpec, connections: int) -> int:
    """Pods for `connections` at the policy's target, within its bounds."""
    wanted = math.ceil(connections / policy.target_connections_per_pod) if connections > 0 else 0
    return min(policy.max_replicas, max(policy.min_replicas, wanted))


def _pods(n: int) -> str:
    return f"{n} pod{'' if n == 1 else 's'}"


def decide(
    policy: AutoscalingSpec,
    replicas: int,
    measurement: Measurement | None,
    memory: Memory,
    now: float,
    *,
    settled: bool = True,
    missing: str = "no measurement",
) -> Decision:
    """The access replicas to set now (see the module docstring).

    `replicas` is the cluster's spec.roles.access.replicas; `now` a monotonic clock in seconds;
    `settled` false while pods of an earlier scale-down are still terminating; `missing` says why
    `measurement` is None.
    """
    window = policy.scale_down_window_seconds
    if memory.replicas is None or memory.since is None or memory.replicas != replicas:
        outside = memory.replicas is not None and memory.replicas != replicas
        memory = Memory(since=now, replicas=replicas)
        restarted = (
            f"replicas changed to {replicas} outside the autoscaler; the window restarts. " if outside else ""
        )
    else:
        restarted = ""

    def result(target: int, reason: str, need: int | None, kept: Memory) -> Decision:
        action = (
            Action.SCALE_UP if target > replicas else Action.SCALE_DOWN if target < replicas else Action.HOLD
        )
        if action is not Action.HOLD:
            # A scale starts a new watch: the next scale-down needs a full window after this one.
            kept = Memory(since=now, replicas=target)
        return Decision(target, action, restarted + reason, kept, need)

    bounded = min(policy.max_replicas, max(policy.min_replicas, replicas))
    if measurement is None:
        # Nothing is known about this stretch of time: a scale-down needs a full window of data after it.
        memory = Memory(since=now, replicas=replicas)
        if bounded != replicas:
            return result(
                bounded, f"{replicas} replicas are outside {_bounds(policy)} ({missing})", None, memory
            )
        return result(replicas, f"{missing}: keeping {_pods(replicas)}", None, memory)

    need = need_for(policy, measurement.total)
    needs = (*((t, n) for t, n in memory.needs if t > now - window), (now, need))
    memory = replace(memory, needs=needs)
    counted = (
        f"{measurement.total} connections at {policy.target_connections_per_pod} per pod need {_pods(need)}"
    )
    if need > replicas:
        return result(need, f"{counted}: scaling up from {replicas}", need, memory)
    if bounded < replicas:
        return result(bounded, f"{replicas} replicas exceed maxReplicas {policy.max_replicas}", need, memory)
    if need == replicas:
        return result(replicas, counted, need, memory)
    # need < replicas: a scale-down, if the window and the data allow it.
    if not measurement.complete:
        pods = ", ".join(measurement.unmeasured)
        return result(replicas, f"{counted}; no scale-down while pods report nothing ({pods})", need, memory)
    since = memory.since if memory.since is not None else now
    if now - since < window:
        # (No elapsed seconds in the reason: it is published in the status, which would change every tick.)
        return result(replicas, f"{counted}; a scale-down waits for the {window}s window", need, memory)
    highest = max(n for _, n in needs)
    if highest >= replicas:
        return result(
            replicas, f"{counted}, but {_pods(highest)} were needed within the last {window}s", need, memory
        )
    if not settled:
        return result(replicas, f"{counted}; waiting for the previous step's pods to drain", need, memory)
    target = max(highest, replicas - policy.scale_down_step)
    return result(target, f"{counted}: scaling down from {replicas} to {target}", need, memory)


def _bounds(policy: AutoscalingSpec) -> str:
    return f"minReplicas {policy.min_replicas}..maxReplicas {policy.max_replicas}"


def deletion_costs(per_pod: Mapping[str, int]) -> dict[str, int]:
    """controller.kubernetes.io/pod-deletion-cost per pod: its connection count (int32), so the
    ReplicaSet controller removes the emptiest pods first."""
    return {pod: min(max(count, 0), MAX_DELETION_COST) for pod, count in per_pod.items()}


# --- the query and its answer ----------------------------------------------------------------------


def access_pods_pattern(cluster: Cluster) -> str:
    """A regular expression of the names of the cluster's access pods (<name>-access-<hash>-<suffix>)."""
    return f"{cluster.name}-access-[a-z0-9]+-[a-z0-9]+"


def render_query(template: str, cluster: Cluster) -> str:
    """The PromQL to run for `cluster`; ValueError names a placeholder the template must not use."""
    try:
        return string.Template(template).substitute(
            namespace=cluster.namespace, cluster=cluster.name, pods=access_pods_pattern(cluster)
        )
    except KeyError as error:
        raise ValueError(
            f"the query template uses ${error.args[0]}; only $namespace, $cluster and $pods are replaced"
        ) from None
    except ValueError as error:
        raise ValueError(f"the query template has a stray $ ({error}); write $$ for a literal $") from None


def measurement_from(
    samples: Iterable[tuple[Mapping[str, str], float]],
    pod_label: str,
    ready_pods: Iterable[str],
    live_pods: Iterable[str],
) -> Measurement | None:
    """A Measurement from the query's samples (labels, value); None when there is none to use.

    Values that are not finite or negative are dropped (a broken exporter, not a count), and so are
    the series of pods that are not `live` (being deleted, or gone): a draining pod's last scraped
    count would add the clients it already sent to the other pods a second time, and scale access
    back up right after a scale-down. When the samples carry `pod_label`, ready pods without one are
    reported as unmeasured.
    """
    live = set(live_pods)
    total = 0.0
    per_pod: dict[str, int] = {}
    usable = 0
    for labels, value in samples:
        pod = labels.get(pod_label)
        if not math.isfinite(value) or value < 0 or (pod and pod not in live):
            continue
        usable += 1
        total += value
        if pod:
            per_pod[pod] = per_pod.get(pod, 0) + round(value)
    if usable == 0:
        return None
    unmeasured = tuple(sorted(set(ready_pods) - set(per_pod))) if per_pod else ()
    return Measurement(total=round(total), per_pod=per_pod, unmeasured=unmeasured)

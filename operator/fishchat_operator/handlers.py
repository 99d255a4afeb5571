"""kopf wiring: thin handlers that hand every trigger to the one `Reconciler`.

Create, update (of the spec), resume and a periodic resync all run the same idempotent reconcile;
deletion runs the reclaim behind the operator's own finalizer; a change to a managed Deployment's
status refreshes the owner's status; a second per-cluster daemon runs access autoscaling. Startup
configures kopf to keep its bookkeeping under the `fishchat.io/` prefix, builds the reconciler and
the autoscaler and serves metrics. Run with `python -m fishchat_operator` or
`kopf run --standalone -m fishchat_operator.handlers`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, cast

import kopf

from fishchat_operator import metrics
from fishchat_operator.autoscaler import Autoscaler
from fishchat_operator.config import OperatorConfig
from fishchat_operator.constants import (
    API_VERSION,
    FINALIZER,
    GROUP,
    KIND,
    KOPF_DIFFBASE_ANNOTATION,
    KOPF_PROGRESS_PREFIX,
    LABEL_MANAGED_BY,
    OPERATOR_NAME,
    PLURAL,
    VERSION,
)
from fishchat_operator.kube import KubeClient, login
from fishchat_operator.reconcile import ReclaimError, Reconciler

HANDLER_BACKOFF_SECONDS = 5.0
# On stop (deletion, operator exit) the resync loop gets this long to finish a pass and leave by
# itself before it is cancelled, and then this long to unwind.
DAEMON_GRACE_SECONDS = 10.0
STOP_POLL_SECONDS = 1.0
DAEMON_CANCELLATION_SECONDS = 10.0

Logger = logging.Logger | logging.LoggerAdapter[Any]


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf settings: our finalizer and annotation prefix, quiet events, bounded watches."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PROGRESS_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PROGRESS_PREFIX, key=KOPF_DIFFBASE_ANNOTATION
    )
    # Only warnings and errors of the logs become Events; the operator posts its own notable steps.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = OPERATOR_NAME
    # Events are best effort; kopf posts them from one queue, so an Event that cannot be posted (its
    # namespace is being deleted) must not hold up the others for a minute.
    settings.posting.default_backoffs = (1, 2, 4)
    settings.posting.logging_backoffs = (1, 2)
    # Re-establish watches regularly so a silently dead connection cannot stall the operator.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.peering.standalone = True
    # The resync daemon looks at its stop flag at least every STOP_POLL_SECONDS; waiting that long
    # for it to leave by itself lets a deletion go on at once instead of in kopf's retry cycles.
    settings.background.instant_exit_timeout = STOP_POLL_SECONDS + 0.5


def post_event(body: Mapping[str, Any], *, type: str, reason: str, message: str) -> None:
    target = body if isinstance(body, kopf.Body) else kopf.Body(cast(Any, dict(body)))
    kopf.event(target, type=type, reason=reason, message=message)


def _reconciler(memo: kopf.Memo) -> Reconciler:
    reconciler: Reconciler = memo["reconciler"]
    return reconciler


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Logger, **_: Any) -> None:
    configure(settings)
    config: OperatorConfig = memo.get("config") or OperatorConfig.from_env()
    kube = KubeClient(lambda: login(settings, config.kubeconfig))
    memo["config"] = config
    memo["kube"] = kube
    reconciler = Reconciler(kube, config, post_event)
    autoscaler = Autoscaler(
        kube,
        config,
        post_event,
        lambda namespace, name, log: reconciler.refresh_status(namespace, name, log, wait=True),
    )
    reconciler.autoscaling = autoscaler.observation
    memo["reconciler"] = reconciler
    memo["autoscaler"] = autoscaler
    if config.metrics_port:
        memo["metrics_runner"] = await metrics.serve(config.metrics_host, config.metrics_port)
        logger.info("Serving metrics on %s:%d/metrics", config.metrics_host, config.metrics_port)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    runner = memo.get("metrics_runner")
    if runner is not None:
        await runner.cleanup()
    autoscaler = memo.get("autoscaler")
    if autoscaler is not None:
        await autoscaler.close()
    kube = memo.get("kube")
    if kube is not None:
        await kube.close()


@kopf.on.login()
def login_handler(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo | None:
    config: OperatorConfig = memo["config"]
    return login(settings, config.kubeconfig)


@kopf.on.probe(id="clusters")
def probe_clusters(memo: kopf.Memo, **_: Any) -> int:
    """Reported by the liveness endpoint: how many clusters this operator reconciled."""
    return _reconciler(memo).managed_clusters


@kopf.on.create(GROUP, VERSION, PLURAL, backoff=HANDLER_BACKOFF_SECONDS)
async def on_create(body: kopf.Body, memo: kopf.Memo, logger: Logger, **_: Any) -> None:
    await _reconciler(memo).reconcile(body, "create", logger)


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", backoff=HANDLER_BACKOFF_SECONDS)
async def on_update(body: kopf.Body, memo: kopf.Memo, logger: Logger, **_: Any) -> None:
    await _reconciler(memo).reconcile(body, "update", logger)


@kopf.on.resume(GROUP, VERSION, PLURAL, backoff=HANDLER_BACKOFF_SECONDS)
async def on_resume(body: kopf.Body, memo: kopf.Memo, logger: Logger, **_: Any) -> None:
    await _reconciler(memo).reconcile(body, "resume", logger)


@kopf.daemon(
    GROUP,
    VERSION,
    PLURAL,
    cancellation_backoff=DAEMON_GRACE_SECONDS,
    cancellation_timeout=DAEMON_CANCELLATION_SECONDS,
)
async def resync(
    body: kopf.Body, memo: kopf.Memo, logger: Logger, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """The periodic resync: a full pass whenever the last one is `resync_seconds` old.

    A daemon rather than a kopf timer, so the period comes from the operator's settings at run time
    and an idle cluster costs no log line per tick. `body` is kept current by kopf.
    """
    reconciler = _reconciler(memo)
    uid = body["metadata"]["uid"]
    while not stopped:
        await reconciler.resync_if_due(body, logger)
        # Short sleeps and a look at `stopped` rather than `stopped.wait()`: kopf's awaitable wait
        # can swallow a cancellation on Python 3.11, and a prompt exit keeps deletions fast.
        await asyncio.sleep(min(STOP_POLL_SECONDS, reconciler.seconds_until_due(uid)))


@kopf.daemon(
    GROUP,
    VERSION,
    PLURAL,
    cancellation_backoff=DAEMON_GRACE_SECONDS,
    cancellation_timeout=DAEMON_CANCELLATION_SECONDS,
)
async def autoscale(
    body: kopf.Body, memo: kopf.Memo, logger: Logger, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """Access autoscaling: one tick every `autoscale_seconds` (it does nothing while disabled)."""
    autoscaler: Autoscaler = memo["autoscaler"]
    period = memo["config"].autoscale_seconds
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    loop = asyncio.get_running_loop()
    due = loop.time()
    while not stopped:
        if loop.time() >= due:
            due = loop.time() + period
            try:
                await autoscaler.tick(namespace, name, logger)
            except Exception:
                # A failed tick (the API server briefly unreachable) changes nothing; the next one retries.
                logger.exception("Autoscaling tick failed")
        # Short sleeps and a look at `stopped`, as in `resync`.
        await asyncio.sleep(min(STOP_POLL_SECONDS, max(0.0, due - loop.time())))


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def on_delete(body: kopf.Body, memo: kopf.Memo, logger: Logger, **_: Any) -> None:
    memo["autoscaler"].forget(body["metadata"]["uid"])
    try:
        await _reconciler(memo).reclaim(body, logger)
    except ReclaimError as error:
        raise kopf.TemporaryError(str(error), delay=memo["config"].reclaim_retry_seconds) from error


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_MANAGED_BY: OPERATOR_NAME})
async def on_deployment_event(body: kopf.Body, memo: kopf.Memo, logger: Logger, **_: Any) -> None:
    for owner in body.metadata.get("ownerReferences") or []:
        if owner.get("apiVersion") == API_VERSION and owner.get("kind") == KIND and body.metadata.namespace:
            await _reconciler(memo).refresh_status(body.metadata.namespace, owner["name"], logger)

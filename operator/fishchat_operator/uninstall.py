"""`python -m fishchat_operator.uninstall NAMESPACE/NAME ...`: delete FishChatClusters and wait for them.

The Helm chart's pre-delete hook runs this before `helm uninstall` removes the operator: deletion of a
cluster only completes once the operator has applied its reclaimPolicy and removed its finalizer, so the
operator and its RBAC must still be there. Exit status 0 when every named cluster is gone (or never
existed), 1 when one is still there at the timeout (the message says what holds it), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import kopf

from fishchat_operator.constants import API_VERSION, FINALIZER, KIND
from fishchat_operator.kube import KubeClient, KubeError, login

POLL_SECONDS = 1.0


def target(text: str) -> tuple[str, str]:
    namespace, slash, name = text.partition("/")
    if not (slash and namespace and name) or "/" in name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAMESPACE/NAME")
    return namespace, name


async def delete_and_wait(kube: KubeClient, namespace: str, name: str, deadline: float) -> str | None:
    """Delete the cluster and wait until it is gone; None when gone, else why it is still there."""
    if await kube.delete(API_VERSION, KIND, namespace, name):
        print(f"{namespace}/{name}: deletion requested; waiting for the operator's reclaim", flush=True)
    else:
        print(f"{namespace}/{name}: not found (nothing to delete)", flush=True)
        return None
    while True:
        current = await kube.get(API_VERSION, KIND, namespace, name)
        if current is None:
            print(f"{namespace}/{name}: deleted", flush=True)
            return None
        if time.monotonic() >= deadline:
            finalizers = current["metadata"].get("finalizers") or []
            held = (
                f"its finalizer {FINALIZER} is still set: is fishchat-operator running and does it watch "
                f"{namespace}? Its events: kubectl describe fcc -n {namespace} {name}"
                if FINALIZER in finalizers
                else f"finalizers {finalizers} are still set"
            )
            return f"{namespace}/{name}: still present after the timeout; {held}"
        await asyncio.sleep(POLL_SECONDS)


async def run(targets: list[tuple[str, str]], wait_seconds: float) -> int:
    settings = kopf.OperatorSettings()
    kube = KubeClient(lambda: login(settings))
    deadline = time.monotonic() + wait_seconds
    try:
        outcomes = await asyncio.gather(*(delete_and_wait(kube, ns, name, deadline) for ns, name in targets))
    except KubeError as error:
        print(f"fishchat_operator.uninstall: {error}", file=sys.stderr)
        return 1
    finally:
        await kube.close()
    problems = [o for o in outcomes if o]
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fishchat_operator.uninstall",
        description="Delete FishChatClusters and wait until the operator has applied their reclaimPolicy.",
    )
    parser.add_argument("targets", nargs="+", type=target, metavar="NAMESPACE/NAME")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait in all (default 300)")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    return asyncio.run(run(args.targets, args.timeout))


if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m fishchat_operator`: run the operator (one replica; see docs/operator.md).

A thin layer over `kopf.run`: choose the namespaces, the liveness endpoint and verbosity. The
operator runs standalone (no kopf peering): its Deployment has one replica and the Recreate strategy,
so two operators never reconcile the same cluster at once.
"""

from __future__ import annotations

import argparse
import sys

import kopf

DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fishchat_operator",
        description="Reconcile FishChatCluster objects into a running FishChat.",
        epilog="Environment: FISHCHAT_OPERATOR_RESYNC_SECONDS, FISHCHAT_OPERATOR_BACKEND_TIMEOUT_SECONDS, "
        "FISHCHAT_OPERATOR_RECLAIM_RETRY_SECONDS, FISHCHAT_OPERATOR_METRICS_HOST, "
        "FISHCHAT_OPERATOR_METRICS_PORT (0 disables /metrics), FISHCHAT_OPERATOR_KUBECONFIG; "
        "KUBECONFIG outside a cluster.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch this namespace (repeatable; glob patterns allowed). Default: all namespaces.",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)"
    )
    parser.add_argument(
        "--liveness",
        default=DEFAULT_LIVENESS,
        help=f"liveness endpoint URL, or 'none' (default {DEFAULT_LIVENESS})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    kopf.configure(verbose=args.verbose)
    # Importing registers the handlers with kopf's default registry.
    from fishchat_operator import handlers  # noqa: F401

    kopf.run(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=None if args.liveness == "none" else args.liveness,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Instant queries against the Prometheus HTTP API (`GET /api/v1/query`), for access autoscaling.

Every way a query can fail becomes a `QueryError` whose reason is a ScalingActive reason: the server
cannot be reached or does not answer as Prometheus does (`PrometheusUnavailable`), or it refused the
query or the query returns something other than an instant vector (`InvalidQuery`). The message
quotes Prometheus' own error, so the condition tells the user what to fix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from fishchat_operator.constants import Reason

Sample = tuple[Mapping[str, str], float]


class QueryError(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


async def instant_query(
    session: aiohttp.ClientSession, base_url: str, query: str, timeout_s: float
) -> list[Sample]:
    """The samples (labels, value) of `query` evaluated now."""
    url = base_url.rstrip("/") + "/api/v1/query"
    try:
        async with session.get(
            url, params={"query": query}, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as response:
            status, text = response.status, await response.text()
    except (aiohttp.ClientError, TimeoutError) as error:
        detail = str(error) or type(error).__name__
        raise QueryError(
            Reason.PROMETHEUS_UNAVAILABLE, f"Prometheus at {base_url} is unreachable: {detail}"
        ) from error
    try:
        answer: Any = json.loads(text)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or answer.get("status") not in ("success", "error"):
        raise QueryError(
            Reason.PROMETHEUS_UNAVAILABLE,
            f"{url} answered HTTP {status} without a Prometheus API response: {text[:200]!r}",
        )
    if answer["status"] == "error":
        kind, detail = answer.get("errorType", ""), answer.get("error", "")
        if status == 400 or kind == "bad_data":
            raise QueryError(Reason.INVALID_QUERY, f"Prometheus refused the query {query!r}: {detail}")
        raise QueryError(
            Reason.PROMETHEUS_UNAVAILABLE,
            f"Prometheus at {base_url} failed the query (HTTP {status}, {kind}): {detail}",
        )
    return _samples(answer.get("data"), query)


def _samples(data: Any, query: str) -> list[Sample]:
    if not isinstance(data, dict):
        raise QueryError(Reason.PROMETHEUS_UNAVAILABLE, "Prometheus answered without data")
    kind, result = data.get("resultType"), data.get("result")
    result = result if result is not None else []
    try:
        if kind == "scalar":
            return [({}, float(result[1]))]
        if kind == "vector":
            return [
                ({str(k): str(v) for k, v in item["metric"].items()}, float(item["value"][1]))
                for item in result
            ]
    except (TypeError, KeyError, IndexError, ValueError) as error:
        raise QueryError(
            Reason.PROMETHEUS_UNAVAILABLE, f"Prometheus answered a malformed {kind}: {error!r}"
        ) from error
    raise QueryError(
        Reason.INVALID_QUERY,
        f"the query {query!r} returns a {kind}; it must return an instant vector (one sample per pod)",
    )

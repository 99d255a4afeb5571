"""Choosing an access server for a client: the least-loaded live one (the original picked at random).

Ties are broken at random so that clients arriving between two load reports spread over equally
loaded servers instead of piling onto the first one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from fishchat.domain.errors import NoAccessServer
from fishchat.domain.records import ServiceInstance

ACCESS_ROLE = "access"


def least_loaded(instances: Sequence[ServiceInstance], rng: random.Random | None = None) -> ServiceInstance:
    """The instance with the lowest load; `NoAccessServer` when there is none."""
    if not instances:
        raise NoAccessServer()
    lowest = min(instance.load for instance in instances)
    candidates = sorted((i for i in instances if i.load == lowest), key=lambda i: i.instance_id)
    return (rng or random).choice(candidates)

"""The mechanism shared by the preemptive policies: admit in the policy's order, preempting to make room.

A policy supplies the order of the waiting requests, the order in which running requests should give way (least
deserving first) and a rule saying whether a given waiting request may displace a given running one. This function only
does the block and batch arithmetic (in the engine's own counts: RequestView.kv_blocks), so each policy file is its
ordering and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable

from kernel.engine.core.interface import Capacity
from kernel.scheduler.base import Plan, RequestView

MayPreempt = Callable[[RequestView, RequestView], bool]


def plan_preemptive(
    candidates: list[RequestView], victims: list[RequestView], capacity: Capacity, may_preempt: MayPreempt
) -> Plan:
    """Admit candidates in order while they fit; when one does not, preempt the fewest eligible victims, in order, that
    make it fit. Stops at the first candidate that cannot be made to fit: a later one never overtakes it (a large
    request is not starved by a stream of small ones). Victims are preempted only if that admits the candidate."""
    blocks = capacity.free_blocks
    batch = capacity.max_batch - capacity.running
    remaining = list(victims)
    plan = Plan()
    for candidate in candidates:
        need = candidate.blocks  # its KV and the next token's, less shared prefix blocks
        chosen: list[RequestView] = []
        for victim in remaining:
            if batch >= 1 and blocks >= need:
                break
            if may_preempt(candidate, victim):
                chosen.append(victim)
                blocks += victim.blocks  # the blocks it holds alone
                batch += 1
        if not (batch >= 1 and blocks >= need):
            break  # chosen victims are not preempted: it would admit nothing
        for victim in chosen:
            remaining.remove(victim)
            plan.preempt.append(victim.req_id)
        plan.admit.append(candidate.req_id)
        blocks -= need
        batch -= 1
    return plan

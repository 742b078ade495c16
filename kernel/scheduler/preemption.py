"""The mechanism shared by the preemptive policies: admit in the policy's order, preempting to make room.

A policy supplies the order of the waiting requests, the order in which running requests should give way (least
deserving first) and a rule saying whether a given waiting request may displace a given running one. This function only
does the slot and batch arithmetic, so each policy file is its ordering and nothing else.
"""
from __future__ import annotations

from typing import Callable

from kernel.engine.interface import Capacity
from kernel.scheduler.base import Plan, RequestView

MayPreempt = Callable[[RequestView, RequestView], bool]


def plan_preemptive(candidates: list[RequestView], victims: list[RequestView], capacity: Capacity,
                    may_preempt: MayPreempt) -> Plan:
    """Admit candidates in order while they fit; when one does not, preempt the fewest eligible victims, in order, that
    make it fit. Stops at the first candidate that cannot be made to fit: a later one never overtakes it (a large
    request is not starved by a stream of small ones). Victims are preempted only if that admits the candidate."""
    slots = capacity.free_slots
    batch = capacity.max_batch - capacity.running
    remaining = list(victims)
    plan = Plan()
    for candidate in candidates:
        need = candidate.kv_tokens + 1          # its KV plus the slot of the token it computes next
        chosen: list[RequestView] = []
        for victim in remaining:
            if batch >= 1 and slots >= need:
                break
            if may_preempt(candidate, victim):
                chosen.append(victim)
                slots += victim.kv_tokens
                batch += 1
        if not (batch >= 1 and slots >= need):
            break                               # chosen victims are not preempted: it would admit nothing
        for victim in chosen:
            remaining.remove(victim)
            plan.preempt.append(victim.req_id)
        plan.admit.append(candidate.req_id)
        slots -= need
        batch -= 1
    return plan

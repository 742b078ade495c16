"""plas in the kernel: the loop tells it when each agent's program started (RequestView.program_arrival), the same for
every call of a program, tool gaps between them included; through the real sockets, loop and context manager."""

from kernel.scheduler.plas import ProgramLASScheduler
from sdk import connect
from tests.kernel.fake_engine import FakeEngine
from tests.kernel.harness import InProcessKernel, wait_until


class RecordingPLAS(ProgramLASScheduler):
    def __init__(self):
        super().__init__()
        self.views = []

    def plan(self, running, waiting, capacity, now):
        self.views.extend(running + waiting)
        return super().plan(running, waiting, capacity, now)


def test_every_call_of_a_program_carries_the_step_its_program_started(tmp_path):
    scheduler = RecordingPLAS()
    with InProcessKernel(f"ipc://{tmp_path}/k.sock", FakeEngine(max_batch=2), scheduler) as kernel:
        with connect(kernel.address) as early, connect(kernel.address) as late:
            early.generate("first call", max_tokens=3)
            late.generate("another program", max_tokens=3)
            early.generate("after a tool", max_tokens=3)  # same program, later call
            assert set(kernel.loop.llm.program_start) == {early.agent_id, late.agent_id}
        # an agent that ends is forgotten: the table holds connected agents only
        wait_until(lambda: not kernel.loop.llm.program_start, what="program starts dropped with their agents")
    starts = {}
    for view in scheduler.views:
        starts.setdefault(view.agent_id, set()).add(view.program_arrival)
    (early_start,) = starts[early.agent_id]
    (late_start,) = starts[late.agent_id]
    arrivals = {v.req_id: v.arrival for v in scheduler.views if v.agent_id == early.agent_id}
    assert early_start is not None and early_start < late_start
    assert len(set(arrivals.values())) == 2 and early_start == min(arrivals.values())

"""The runner's replay logic: prompts grow with the history, every call and the agent are recorded, errors stop it.
The model is replaced here by a recording stand-in; test_smoke runs the real thing."""

from bench.agent_runner import kv_tokens_needed, run_program
from bench.backends import CallOutcome
from bench.records import read_records
from bench.tools import run_tool
from bench.trace import AgentProgram, Call, ToolGap, Trace


class RecordingBackend:
    def __init__(self, fail_on_call: int | None = None, fail_on_tool: int | None = None):
        self.prompts: list[str] = []
        self.tools: list[ToolGap] = []
        self.fail_on_call = fail_on_call
        self.fail_on_tool = fail_on_tool

    def generate(self, prompt: str, max_tokens: int) -> CallOutcome:
        if len(self.prompts) == self.fail_on_call:
            raise RuntimeError("kernel went away")
        self.prompts.append(prompt)
        return CallOutcome(
            text=f" out{len(self.prompts)}",
            prompt_tokens=len(prompt.split()),
            completion_tokens=max_tokens,
            ttft_s=0.01,
            queue_s=0.0,
        )

    def run_tool(self, gap: ToolGap) -> float:
        if len(self.tools) == self.fail_on_tool:
            raise RuntimeError("tool server crashed")
        self.tools.append(gap)
        return run_tool(gap)

    def close(self) -> None:
        pass


def _trace(history: bool) -> Trace:
    calls = (
        Call(" a b", 2, 3, ToolGap("calculator", 0.0, "2 * 3")),
        Call(" c", 1, 4, ToolGap("api", 0.01)),
        Call(" d", 1, 5),
    )
    agent = AgentProgram("agent-0", "react", 0, 0.0, history, "system", calls)
    return Trace("t", 0, "", {"system": " sys tem"}, (agent,))


def test_history_prompts_extend_previous_prompt_and_output(tmp_path):
    trace, backend = _trace(history=True), RecordingBackend()
    assert run_program(trace, trace.agents[0], backend, tmp_path / "r.jsonl", t0=0.0)
    assert backend.prompts == [" sys tem a b", " sys tem a b out1 c", " sys tem a b out1 c out2 d"]
    requests, agents = read_records([tmp_path / "r.jsonl"])
    assert [r.call for r in requests] == [0, 1, 2]
    assert [r.completion_tokens for r in requests] == [3, 4, 5]
    assert len(agents) == 1 and agents[0].error is None and agents[0].tool_seconds > 0
    assert backend.tools == [call.tool_after for call in trace.agents[0].calls[:-1]]  # the backend ran each gap


def test_a_failed_tool_stops_the_agent_with_its_error(tmp_path):
    trace, backend = _trace(history=True), RecordingBackend(fail_on_tool=1)
    assert not run_program(trace, trace.agents[0], backend, tmp_path / "r.jsonl", t0=0.0)
    requests, agents = read_records([tmp_path / "r.jsonl"])
    assert [r.call for r in requests] == [0, 1]  # the call after the failed tool never ran
    assert "tool server crashed" in agents[0].error and agents[0].error.startswith("tool api")


def test_independent_calls_reuse_only_the_prefix(tmp_path):
    trace, backend = _trace(history=False), RecordingBackend()
    run_program(trace, trace.agents[0], backend, tmp_path / "r.jsonl", t0=0.0)
    assert backend.prompts == [" sys tem a b", " sys tem c", " sys tem d"]


def test_a_failed_call_is_recorded_and_stops_the_agent(tmp_path):
    trace = _trace(history=True)
    assert not run_program(trace, trace.agents[0], RecordingBackend(fail_on_call=1), tmp_path / "r.jsonl", t0=0.0)
    requests, agents = read_records([tmp_path / "r.jsonl"])
    assert [r.error for r in requests] == [None, "RuntimeError: kernel went away"]
    assert agents[0].error == "RuntimeError: kernel went away"


def test_kv_bound_covers_the_whole_history():
    trace = _trace(history=True)
    assert kv_tokens_needed(trace, trace.agents[0]) >= 2 + (2 + 3) + (1 + 4) + (1 + 5)

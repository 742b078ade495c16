"""The context manager with the real torch engine: preempted and restored generations are token-identical to
uninterrupted ones, through snapshots and through recompute, and retained contexts are reused."""

import os

import pytest

from kernel.context.manager import ContextManager
from kernel.context.retention import RetentionPolicy
from kernel.engine.core.interface import SamplingParams
from tests.context.loop import MiniLoop

GREEDY = SamplingParams(max_tokens=8, ignore_eos=True)
# Few distinct prompts: each needs one uninterrupted reference run.
PROMPT, OTHER = "Name three colours.", "What is a cat?"


def chat(engine, text):
    return engine.apply_chat_template([{"role": "user", "content": text}])


@pytest.fixture(scope="module")
def reference(engine):
    """Uninterrupted generations, computed once per prompt and parameters."""
    cache = {}

    def generate(text, params=GREEDY):
        if (text, params) not in cache:
            with ContextManager(engine, 1 << 20, retention=False, kernel_id=f"{os.getpid()}.ref") as cm:
                cache[text, params] = MiniLoop(engine, cm).generate(
                    "ref", f"ref{len(cache)}", chat(engine, text), params
                )
        return cache[text, params]

    return generate


def test_one_snapshot_preemption_is_token_identical(engine, manager, reference):
    cm = manager(retention=False)
    loop = MiniLoop(engine, cm)
    loop.admit("a", "r1", chat(engine, PROMPT), GREEDY)
    for _ in range(5):
        loop.step()
    assert loop.preempt("r1") == "snapshot"
    assert engine.capacity().free_slots == engine.capacity().total_slots  # its engine slots were freed
    assert cm.stats()["snapshots"] == 1 and cm.stats()["arena_used"] > 0
    assert loop.resume("r1") == "snapshot"
    loop.run_until_done("r1")
    assert loop.outputs["r1"] == reference(PROMPT)
    stats = cm.stats()
    assert stats["preemptions"] == stats["resumes"] == 1 and stats["recomputed_tokens"] == 0
    assert stats["snapshot_bytes_saved"] == stats["snapshot_bytes_loaded"] > 0
    assert stats["snapshots"] == 0 and stats["arena_used"] == 0


def test_many_preemptions_beside_other_running_sequences(engine, manager, reference):
    cm = manager(retention=False)
    loop = MiniLoop(engine, cm)
    prompts = {"target": PROMPT, "other": OTHER}
    for req_id, text in prompts.items():
        loop.admit(req_id, req_id, chat(engine, text), GREEDY)
    while "target" not in loop.done:
        loop.step()
        if "target" not in loop.done and len(loop.outputs["target"]) % 2 == 0:
            assert loop.preempt("target") == "snapshot"
            loop.step()  # the others run while it is out
            assert loop.resume("target") == "snapshot"
    loop.run_until_done(*prompts)
    assert cm.stats()["preemptions"] >= 3
    for req_id, text in prompts.items():
        assert loop.outputs[req_id] == reference(text), req_id


def test_seeded_sampling_resumes_with_its_rng_state(engine, manager, reference):
    sampled = SamplingParams(max_tokens=8, temperature=0.9, seed=7, ignore_eos=True)
    loop = MiniLoop(engine, manager(retention=False))
    loop.admit("a", "s1", chat(engine, PROMPT), sampled)
    for _ in range(4):
        loop.step()
    loop.preempt("s1")
    loop.resume("s1")
    loop.run_until_done("s1")
    assert loop.outputs["s1"] == reference(PROMPT, sampled)


@pytest.mark.parametrize("arena_bytes, preempt_mode", [(1 << 20, "snapshot"), (64 << 20, "recompute")])
def test_recompute_resumes_token_identical(engine, manager, reference, arena_bytes, preempt_mode):
    cm = manager(arena_bytes=arena_bytes, retention=False, preempt_mode=preempt_mode)
    loop = MiniLoop(engine, cm)
    prompt = chat(engine, PROMPT)
    loop.admit("a", "r1", prompt, GREEDY)
    for _ in range(6):
        loop.step()
    assert loop.preempt("r1") == "recompute"  # 1 MiB holds less than this sequence's KV
    assert cm.stats()["arena_used"] == 0
    produced = len(loop.outputs["r1"])
    assert loop.resume("r1") == "recompute"
    loop.run_until_done("r1")
    assert loop.outputs["r1"] == reference(PROMPT)
    stats = cm.stats()
    assert stats["recomputed_tokens"] == len(prompt) + produced
    assert stats["recompute_fallbacks"] == (1 if preempt_mode == "snapshot" else 0)
    assert stats["snapshot_bytes_saved"] == 0


def evict_engine_prefix_cache(engine):
    """Admit a request that takes every KV block, then drop it: the engine's cached prefixes are evicted."""
    from kernel.engine.core.interface import EngineRequest

    capacity = engine.capacity()
    filler = EngineRequest("filler", [17] * (capacity.max_context - 1), SamplingParams(max_tokens=1))
    engine.add(filler)
    engine.abort("filler")


def test_retained_context_is_reused_by_the_next_call_and_matches_a_cold_run(engine, manager):
    cm = manager()
    loop = MiniLoop(engine, cm)
    first_prompt = chat(engine, "Pick a number.")
    first = loop.generate("agent", "call1", first_prompt, GREEDY)
    assert cm.stats()["retained_contexts"] == 1
    # The agent's next call re-sends its history (prompt + the answer) and a little more.
    second_prompt = first_prompt + first + engine.tokenize("\nNow double it.")
    assert loop.admit("agent", "call2", second_prompt, GREEDY) == len(first_prompt) + len(first) - 1
    loop.run_until_done("call2")
    stats = cm.stats()
    assert stats["retained_hits"] == 1
    assert stats["retained_tokens_reused"] == len(first_prompt) + len(first) - 1
    evict_engine_prefix_cache(engine)
    cold = MiniLoop(engine, manager(retention=False)).generate("other", "cold", second_prompt, GREEDY)
    assert loop.outputs["call2"] == cold


def test_a_call_that_does_not_extend_the_retained_context_starts_cold(engine, manager):
    cm = manager()
    loop = MiniLoop(engine, cm)
    loop.generate("agent", "call1", chat(engine, "Pick a colour."), GREEDY)
    assert loop.admit("agent", "call2", chat(engine, "Something else entirely."), GREEDY) == 0
    loop.run_until_done("call2")
    assert cm.stats()["retained_hits"] == 0 and cm.stats()["retained_contexts"] == 1  # replaced by call2's


def test_retained_contexts_give_way_to_request_snapshots(engine, manager):
    prompt = chat(engine, "Describe rain.")
    kv_bytes = (len(prompt) + 7) * engine.layout().bytes_per_token()
    # Room for one record of this size: the retained context must be evicted for the preemption's snapshot.
    cm = manager(arena_bytes=kv_bytes + kv_bytes // 2, policy=RetentionPolicy(max_share=1.0))
    loop = MiniLoop(engine, cm)
    loop.generate("idle-agent", "done", prompt, GREEDY)
    assert cm.stats()["retained_contexts"] == 1
    loop.admit("busy-agent", "live", prompt + [17] * 4, GREEDY)
    for _ in range(5):
        loop.step()
    assert loop.preempt("live") == "snapshot"
    stats = cm.stats()
    assert stats["evictions"] == 1 and stats["retained_contexts"] == 0 and stats["snapshots"] == 1
    cm.drop_request("live")


def test_a_context_too_large_for_its_share_of_the_arena_is_not_retained(engine, manager):
    prompt = chat(engine, "Describe snow.")
    kv_bytes = (len(prompt) + 7) * engine.layout().bytes_per_token()
    cm = manager(arena_bytes=kv_bytes + kv_bytes // 2)  # default policy: at most half the arena
    MiniLoop(engine, cm).generate("agent", "r", prompt, GREEDY)
    assert cm.stats()["retained_contexts"] == 0 and cm.stats()["arena_used"] == 0


def test_drop_agent_frees_its_snapshots_retained_context_and_engine_slots(engine, manager):
    cm = manager()
    loop = MiniLoop(engine, cm)
    loop.generate("doomed", "earlier", chat(engine, "Hi."), GREEDY)
    loop.admit("doomed", "paused", chat(engine, "Tell a joke."), GREEDY)
    loop.admit("doomed", "running", chat(engine, "Tell a story."), GREEDY)
    for _ in range(3):
        loop.step()
    loop.preempt("paused")
    stats = cm.stats()
    assert stats["snapshots"] == 1 and stats["retained_contexts"] == 1 and engine.has_work()
    cm.drop_agent("doomed")
    stats = cm.stats()
    assert stats["snapshots"] == stats["retained_contexts"] == stats["arena_used"] == 0
    assert not engine.has_work()
    assert engine.capacity().free_slots == engine.capacity().total_slots
    with pytest.raises(KeyError, match="paused"):
        loop.resume("paused")


def test_close_leaves_no_segment(engine):
    cm = ContextManager(engine, 1 << 20, kernel_id=f"{os.getpid()}.close")
    path = cm.stats()["arena_path"]
    assert os.path.exists(path)
    cm.close()
    assert not os.path.exists(path)


def test_bad_preempt_mode_is_refused(engine):
    with pytest.raises(ValueError, match="preempt_mode"):
        ContextManager(engine, 1 << 20, preempt_mode="swap", kernel_id=f"{os.getpid()}.bad")


def test_resuming_with_tokens_that_do_not_extend_the_snapshot_is_refused(engine, manager):
    from kernel.context.snapshot import SnapshotError
    from kernel.engine.core.interface import EngineRequest

    cm = manager(retention=False)
    loop = MiniLoop(engine, cm)
    prompt = chat(engine, PROMPT)
    loop.admit("a", "r1", prompt, GREEDY)
    for _ in range(3):
        loop.step()
    loop.preempt("r1")
    wrong = [token + 1 for token in loop.outputs["r1"]]
    with pytest.raises(SnapshotError, match="prefix"):
        cm.resume(EngineRequest("r1", prompt, GREEDY, wrong))
    assert not engine.has_work() and cm.stats()["snapshots"] == 1
    cm.drop_request("r1")
    assert cm.stats()["snapshots"] == 0 and cm.stats()["arena_used"] == 0
    with pytest.raises(KeyError, match="r1"):
        cm.preempt("r1")

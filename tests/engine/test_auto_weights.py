"""weights=auto measures quality and speed: the fastest candidate within the perplexity bar wins (speeds injected, so
no timing is asserted), failing candidates are not timed, the result is cached per CPU/model/dtype/threads and reused,
an unreadable cache is ignored, and the engine runs the mode it says it chose."""

import torch
from hypothesis import given
from hypothesis import strategies as st

from kernel.engine.cpu.engine import TorchEngine
from kernel.engine.cpu.quant_select import (
    AUTO_ORDER,
    FALLBACK,
    MAX_PPL_RATIO,
    Candidate,
    WeightsCache,
    choose_mode,
    decode_speed,
    pick,
)
from kernel.engine.loading.checkpoint import load_checkpoint

ratios = st.one_of(st.floats(0.9, MAX_PPL_RATIO), st.floats(MAX_PPL_RATIO + 1e-6, 3.0))
speeds = st.floats(0.1, 500.0)


@st.composite
def measured(draw):
    out = []
    for mode in AUTO_ORDER:
        ratio = draw(ratios)
        out.append(Candidate(mode, ratio, draw(speeds) if ratio <= MAX_PPL_RATIO else None))
    return out


@given(measured())
def test_pick_is_the_fastest_that_passes_else_fp32(candidates):
    mode, why = pick(candidates)
    passing = [c for c in candidates if c.ppl_ratio <= MAX_PPL_RATIO]
    if not passing:
        assert mode == FALLBACK and "no candidate" in why
        return
    chosen = next(c for c in candidates if c.mode == mode)
    assert chosen.ppl_ratio <= MAX_PPL_RATIO
    assert chosen.tok_s == max(c.tok_s for c in passing)
    # a tie in speed goes to the earlier candidate (fewer bytes per weight)
    tied = [c.mode for c in passing if c.tok_s == chosen.tok_s]
    assert mode == min(tied, key=AUTO_ORDER.index)


def test_pick_breaks_ties_toward_fewer_bytes():
    assert pick([Candidate("bf16", 1.0, 50.0), Candidate("int8", 1.0, 50.0), Candidate("int4", 1.2, None)])[0] == "int8"


class Injected:
    """Speeds per mode in place of the clock; records which modes were timed."""

    def __init__(self, speeds: dict[str, float]):
        self.speeds, self.timed = speeds, []

    def __call__(self, model, token_ids) -> float:
        self.timed.append(model.mode)
        return self.speeds[model.mode]


def _inputs(tiny_folder):
    checkpoint = load_checkpoint(tiny_folder, torch.float32)
    ids = checkpoint.tokenizer.encode("The kernel batches every agent's tokens into one step. " * 6)
    return checkpoint, ids


def test_choose_mode_takes_the_fastest_passing_candidate(tiny_folder):
    checkpoint, ids = _inputs(tiny_folder)
    for fastest in AUTO_ORDER:
        measure = Injected({mode: (100.0 if mode == fastest else 10.0) for mode in AUTO_ORDER})
        mode, candidates, model = choose_mode(
            checkpoint.config, checkpoint.weights, torch.float32, ids, measure=measure
        )
        assert [c.mode for c in candidates] == list(AUTO_ORDER)  # every candidate's quality is measured
        timed = [c.mode for c in candidates if c.ppl_ratio <= MAX_PPL_RATIO]
        assert measure.timed == timed  # only those within the bar are timed
        assert all(c.tok_s is None for c in candidates if c.mode not in timed)
        expected = fastest if fastest in timed else pick(candidates)[0]
        assert mode == expected
        if mode != FALLBACK:
            assert model is not None and model.mode == mode  # the chosen model is handed over built


def test_cached_result_is_reused_and_keyed_by_machine_and_model(tiny_folder, tmp_path):
    checkpoint, ids = _inputs(tiny_folder)
    cache = WeightsCache(tmp_path)
    key = WeightsCache.key(checkpoint.model_id, torch.float32, 2)
    assert (
        len(
            {
                key,
                WeightsCache.key(checkpoint.model_id, torch.float32, 1),
                WeightsCache.key(checkpoint.model_id, torch.bfloat16, 2),
                WeightsCache.key(checkpoint.model_id + "x", torch.float32, 2),
            }
        )
        == 4
    )
    first = choose_mode(
        checkpoint.config,
        checkpoint.weights,
        torch.float32,
        ids,
        cache,
        key,
        Injected({"int4": 5.0, "int8": 9.0, "bf16": 7.0}),
    )
    assert (tmp_path / "weights-auto" / f"{key}.json").exists()

    def must_not_measure(model, token_ids):
        raise AssertionError("a cached result was measured again")

    again = choose_mode(checkpoint.config, checkpoint.weights, torch.float32, ids, cache, key, must_not_measure)
    assert again[0] == first[0] and again[1] == first[1] and again[2] is None  # the caller builds the chosen mode

    (tmp_path / "weights-auto" / f"{key}.json").write_text("{not json")  # unreadable: measured afresh
    measure = Injected({"int4": 5.0, "int8": 9.0, "bf16": 7.0})
    third = choose_mode(checkpoint.config, checkpoint.weights, torch.float32, ids, cache, key, measure)
    assert third[0] == first[0] and measure.timed


def test_real_decode_speed_is_positive(tiny_folder):
    checkpoint, ids = _inputs(tiny_folder)
    from kernel.engine.cpu.model import LlamaModel

    assert decode_speed(LlamaModel(checkpoint.config, checkpoint.weights, torch.float32, "int8"), ids, steps=3) > 0


def test_engine_runs_the_mode_auto_chose_and_reuses_it(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("AIOS_CACHE_DIR", str(tmp_path))
    engine = TorchEngine.from_path(
        str(tiny_folder), "float32", weights="auto", kv_budget_tokens=256, max_batch=2, threads=1
    )
    assert [c.mode for c in engine.weight_choice] == list(AUTO_ORDER)
    assert engine.weights == pick(engine.weight_choice)[0]
    assert engine.weight_ratios == {c.mode: c.ppl_ratio for c in engine.weight_choice}
    assert len(list((tmp_path / "weights-auto").glob("*.json"))) == 1
    second = TorchEngine.from_path(
        str(tiny_folder), "float32", weights="auto", kv_budget_tokens=256, max_batch=2, threads=1
    )
    assert second.weight_choice == engine.weight_choice and second.weights == engine.weights

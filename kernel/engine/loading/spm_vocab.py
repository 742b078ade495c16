"""A SentencePiece-BPE vocabulary in GGUF metadata (tokenizer.ggml.model = 'llama') → a `tokenizers` Tokenizer.

Gemma's, Llama 1/2's and Mistral's GGUF files carry no merges: tokens, scores, token types and the special ids only.
This rebuilds the tokenizer the way transformers' GGUF converter does (integrations/gguf/gguf_tokenizer_mapping.py,
GemmaTokenizer / LlamaTokenizer), so our ids are the ones the model was checked against there:

- BPE with byte fallback (<0x00>..<0xFF> tokens for what the vocabulary cannot spell) and unknown pieces fused;
- merges derived from the vocabulary: every split of a token into two tokens, best first. Llama ranks them by the
  token's score; Gemma by the token's position in the file (its scores do not follow its merge order);
- spaces become '▁' before BPE. Gemma: a plain replace, no prefix. Llama: a Metaspace that prepends '▁' to the first
  piece of the text (add_space_prefix), undone by the decoder;
- control tokens (type 3) are whole special tokens; user-defined ones (type 4: Gemma's '\\n' runs) whole plain ones.
  Gemma stores its runs of spaces with real spaces where its merges spell them '▁▁': they are renamed, as there.

Chat template. A Gemma file without one (the Gemma 3 270M Q4_K_M we test with has none) gets Gemma 3's own
(google/gemma-3-*-it tokenizer_config.json; Gemma 1 and 2 share its turn format), as llama.cpp falls back to its
built-in Gemma format: default_chat_template.

End of turn. Gemma's files name only <eos> as eos, but its chat ends each turn with <end_of_turn>: as llama.cpp does,
a control token spelling a known end of turn ends a sequence too (end_of_turn_ids).
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

from kernel.engine.loading.model_config import ModelLoadError

_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp's token types
_SPACE = "\u2581"  # '▁', SentencePiece's visible space
_GEMMA_ARCHS = frozenset({"gemma", "gemma2", "gemma3", "gemma3n"})
# control-token texts llama.cpp treats as an end of generation when the file does not say (llama-vocab.cpp)
_END_OF_TURN = frozenset({"<end_of_turn>", "<|eot_id|>", "<|im_end|>", "<|end|>", "<EOT>", "<|endoftext|>"})


# Gemma 3's chat template, as google/gemma-3-*-it ship it: a system message becomes the first user turn's prefix
GEMMA3_CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""


def default_chat_template(meta: dict) -> str | None:
    """The file's chat template; Gemma 3's for a Gemma file that has none and whose vocabulary has its turn tokens."""
    template = meta.get("tokenizer.chat_template")
    if template or meta.get("general.architecture") not in _GEMMA_ARCHS:
        return template or None
    tokens = set(meta.get("tokenizer.ggml.tokens") or ())
    return GEMMA3_CHAT_TEMPLATE if {"<start_of_turn>", "<end_of_turn>"} <= tokens else None


def spm_tokenizer(meta: dict) -> Tokenizer:
    """The Tokenizer of a 'llama' (SentencePiece BPE) GGUF vocabulary; ModelLoadError when its fields are unusable."""
    try:
        tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    except KeyError as exc:
        raise ModelLoadError("GGUF SentencePiece vocabulary lacks tokenizer.ggml.tokens") from exc
    types = list(meta.get("tokenizer.ggml.token_type") or ())
    if not tokens or (types and len(types) != len(tokens)):
        raise ModelLoadError(f"GGUF vocabulary: {len(tokens)} tokens but {len(types)} token types")
    gemma = meta.get("general.architecture") in _GEMMA_ARCHS
    if gemma:
        tokens = [_SPACE * len(t) if " " in t and not t.strip() else t for t in tokens]
        ranks = {t: -i for i, t in enumerate(tokens)}
    else:
        scores = meta.get("tokenizer.ggml.scores")
        if scores is None or len(scores) != len(tokens):
            raise ModelLoadError("GGUF SentencePiece vocabulary: tokenizer.ggml.scores missing or of the wrong length")
        ranks = dict(zip(tokens, (float(s) for s in scores)))
    vocab = {t: i for i, t in enumerate(tokens)}
    unk = _token(tokens, meta.get("tokenizer.ggml.unknown_token_id", 3 if gemma else 0)) or None
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=derive_merges(vocab, ranks),
            unk_token=unk,
            fuse_unk=True,
            byte_fallback=True,
            dropout=None,
        )
    )
    tail = [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if gemma:
        tok.normalizer = normalizers.Replace(" ", _SPACE)
        tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    else:
        # transformers' LlamaTokenizer takes the prefix space whatever the file's add_space_prefix says; so do we,
        # unless the file says no (its ids then differ from transformers' where text starts without a space)
        prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement=_SPACE, prepend_scheme="first" if prefix else "never", split=False
        )
        if prefix:
            tail.append(decoders.Strip(content=" ", left=1))
    tok.decoder = decoders.Sequence(tail)
    # user-defined tokens are added only when the (renamed) vocabulary spells them, as transformers does
    tok.add_special_tokens(
        [AddedToken(tokens[i], special=True, normalized=False) for i, t in enumerate(types) if t == _CONTROL]
    )
    original = meta["tokenizer.ggml.tokens"]
    tok.add_tokens(
        [
            AddedToken(original[i], special=False, normalized=False)
            for i, t in enumerate(types)
            if t == _USER_DEFINED and original[i] in vocab
        ]
    )
    return tok


def derive_merges(vocab: dict[str, int], ranks: dict[str, float]) -> list[tuple[str, str]]:
    """Every (left, right) split of a token into two vocabulary tokens, ordered by the token's rank (higher first),
    then by shorter left and right parts; transformers' generate_merges, which our ids must equal."""
    merges = []
    for piece, rank in ranks.items():
        local = [
            (piece[:k], piece[k:], rank) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab
        ]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(left, right) for left, right, _ in merges]


def end_of_turn_ids(tokens: Sequence[str], types: Sequence[int]) -> list[int]:
    """Ids of control tokens that end a turn by their spelling (<end_of_turn>, <|im_end|>...)."""
    return [i for i, t in enumerate(types) if t == _CONTROL and tokens[i] in _END_OF_TURN]


def _token(tokens: Sequence[str], token_id) -> str:
    return tokens[int(token_id)] if token_id is not None and 0 <= int(token_id) < len(tokens) else ""

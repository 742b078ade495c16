"""Grammar specs for constrained decoding, and their compilation (llguidance), cached per engine.

A grammar spec is a string llguidance's LLMatcher takes: a Lark grammar (with llguidance's extensions: `%json {schema}`
sub-grammars, `&` and `~` on lexemes), or the JSON grammar the helpers below return. SamplingParams.grammar carries
one; build it with json_schema_grammar / lark_grammar / regex_grammar rather than by hand, so the JSON whitespace
policy is the same everywhere.

JSON whitespace. Generated JSON is compact ("," and ":" with no whitespace): a small model allowed free whitespace can
emit newlines forever, and with ": " the grammar split SmolLM2's canonical ' "' token into ' ' then '"', which
derailed its arguments (commit 5069df1); compact JSON keeps the model's tokenization canonical.

Compilation. GrammarCompiler owns the token table llguidance needs (built from the tokenizer on first use: ~0.4 s for
a 49k vocabulary, paid only by engines that see a grammar) and a bounded LRU of compiled grammars keyed by spec: an
agent sends the same tool set call after call, and a new sequence starts from a copy of the compiled matcher. A spec
that does not compile raises EngineError naming llguidance's reason.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from kernel.engine.errors import EngineError

# Compiled grammars kept per engine. Each holds the grammar's lexer/parser tables (kilobytes to a few MiB for big
# schemas); 64 distinct tool sets in flight is far beyond what a kernel's agents use at once.
CACHE_SIZE = 64

JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}


def json_schema_grammar(schema: dict | bool) -> str:
    """A grammar spec accepting exactly the JSON documents that validate against schema (compact, see above)."""
    import llguidance

    try:
        return llguidance.LLMatcher.grammar_from_json_schema(_as_json(schema), overrides=JSON_OPTIONS)
    except (ValueError, TypeError) as exc:
        raise EngineError(f"not a JSON schema: {exc}") from exc


def json_schema_lark(schema: dict | bool, item_separator: str = ",", key_separator: str = ":") -> str:
    """schema as a `%json {...}` Lark rule body (for embedding in a larger Lark grammar), same whitespace policy;
    the separators may be a model's own (", " and ": " where its chat template writes past tool calls so)."""
    if isinstance(schema, dict):
        options = {**JSON_OPTIONS, "item_separator": item_separator, "key_separator": key_separator}
        schema = {**schema, "x-guidance": {**schema.get("x-guidance", {}), **options}}
    return "%json " + _as_json(schema)


def lark_grammar(lark: str) -> str:
    """A Lark grammar as a spec (llguidance's dialect; the start rule is `start`)."""
    if not isinstance(lark, str) or not lark.strip():
        raise EngineError("a Lark grammar must be a non-empty string")
    return lark


def regex_grammar(regex: str) -> str:
    """A spec accepting exactly the strings regex matches as a whole."""
    import llguidance

    return llguidance.LLMatcher.grammar_from_regex(regex)


def _as_json(schema: Any) -> str:
    try:
        return json.dumps(schema, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise EngineError(f"JSON schema is not serializable as JSON: {exc}") from exc


class GrammarCompiler:
    """Compiles grammar specs against one engine's vocabulary. new_matcher(spec) returns a fresh llguidance LLMatcher
    (a copy of the cached compiled one), or raises EngineError."""

    def __init__(
        self, tokenizer_json: Callable[[], str], vocab_size: int, eos_ids: tuple[int, ...], cache_size: int = CACHE_SIZE
    ):
        self._tokenizer_json = tokenizer_json
        self.vocab_size = vocab_size
        self._eos_ids = list(eos_ids)
        self._cache_size = cache_size
        self._tokenizer = None
        self._compiled: OrderedDict[str, Any] = OrderedDict()
        self.compilations = 0  # how many specs were compiled (cache misses), for tests and stats

    def new_matcher(self, spec: str):
        compiled = self._compiled.get(spec)
        if compiled is None:
            compiled = self._compile(spec)
            self._compiled[spec] = compiled
            if len(self._compiled) > self._cache_size:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(spec)
        return compiled.deep_copy()

    def _compile(self, spec: str):
        import llguidance

        if self._tokenizer is None:
            # The eos ids must be the engine's: the matcher allows them exactly where the grammar may end.
            self._tokenizer = llguidance.LLTokenizer(
                self._tokenizer_json(), n_vocab=self.vocab_size, eos_token=self._eos_ids or None
            )
        # log_level 0: llguidance reports problems through is_error()/get_error(), not on the kernel's stderr.
        matcher = llguidance.LLMatcher(self._tokenizer, spec, log_level=0)
        if matcher.is_error():
            raise EngineError(f"grammar does not compile: {matcher.get_error()[:300]}")
        self.compilations += 1
        return matcher


def grammar_compiler(tokenizer, model_vocab_size: int, eos_ids: tuple[int, ...] | None = None) -> GrammarCompiler:
    """The compiler for an engine's TextTokenizer. Its masks span the larger of the model's and the tokenizer's
    vocabularies (a model may pad its output layer past the tokenizer's ids: those never get allowed)."""
    # to_json is looked up only when a grammar is first compiled: a tokenizer without it serves unconstrained requests
    return GrammarCompiler(
        lambda: tokenizer.to_json(),
        max(model_vocab_size, getattr(tokenizer, "vocab_size", 0)),
        tuple(tokenizer.eos_ids) if eos_ids is None else eos_ids,
    )

"""Constrained decoding and tool calls: grammars (llguidance), per-sequence matchers, the tool-call formats of the model
families (tool_formats.py) and a chat with tools made ready for a model (tool_chat.py).

Of the engine it imports only its errors (kernel/engine/errors.py): kernel/engine/core builds on these matchers, so
structured must not import core (tests/engine/test_boundaries.py checks it in a fresh interpreter)."""

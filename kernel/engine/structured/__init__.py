"""Constrained decoding and tool calls: grammars (llguidance), per-sequence matchers, the tool-call format."""

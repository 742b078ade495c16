"""Constrained decoding and tool calls: grammars (llguidance), per-sequence matchers, the tool-call formats of the model
families (tool_formats.py) and a chat with tools made ready for a model (tool_chat.py)."""

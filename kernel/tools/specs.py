"""The values that cross the tool manager's API: what a tool is (ToolSpec) and what a call returned (ToolResult).

Both are frozen: the kernel may hand them to other threads. ToolSpec.input_schema is the schema an agent sees, with
the arguments the kernel injects (see kernel/tools/schema.py) already removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# A tool's result text is cut to this many bytes (UTF-8) unless its server's config says otherwise.
DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024


@dataclass(frozen=True)
class ToolSpec:
    name: str  # unique across servers (a clash is exposed as "<server>_<tool>")
    description: str
    input_schema: dict = field(hash=False)
    server: str
    irreversible: bool = False  # the kernel asks a human (or a policy) before running it
    early_start: bool = False  # read-only or idempotent: the kernel may start it as the model writes the call


@dataclass(frozen=True)
class ToolResult:
    text: str  # the tool's text content, joined; non-text content is described, not inlined
    is_error: bool = False  # the tool ran and reported a failure (the call itself succeeded)
    truncated: bool = False  # text was cut to the server's max_output_bytes

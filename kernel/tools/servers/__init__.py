"""Built-in MCP servers, each runnable as `python -m kernel.tools.servers.NAME` and speaking MCP over stdio.

calculator (bounded arithmetic), python (runs a snippet under the sandbox's limits), files and memory (the calling
agent's storage space through the SDK; the space arrives as a kernel-injected argument, see kernel/tools/schema.py).
Each builds its server in a function and runs it from `main()`: importing a module starts nothing.
"""

from kernel.tools.schema import CONTEXT_MARK

# The annotation a tool parameter carries to receive the caller's space from the kernel (hidden from agents).
SPACE_FIELD = {CONTEXT_MARK: "space"}

"""The tool manager: MCP servers started as (sandboxed) child processes, reached by the kernel through one API.

    from kernel.tools import ToolManager, load_config
    manager = ToolManager(load_config(None))      # or load_config("tools.toml")
    manager.start()                               # → {server: why} for servers that did not come up
    manager.list_tools()                          # → [ToolSpec]
    manager.call("calculate", {"expression": "17*23+4"}, {"space": "uid:0/notes", "agent_id": "a3"}).result()
    manager.stop()

Modules: config (what to run), sandbox (the launcher that confines a server), transport (bounded stdio pipes),
server (one supervised server: start, restart, per-tool limits), schema (argument checks and kernel-injected
arguments), manager (the thread and loop that own it all), specs (the values crossing the API).
"""

from kernel.tools.config import ServerConfig, ToolsConfig, load_config
from kernel.tools.manager import ToolManager
from kernel.tools.sandbox import SandboxLimits
from kernel.tools.specs import ToolResult, ToolSpec

__all__ = ["ServerConfig", "ToolsConfig", "load_config", "ToolManager", "SandboxLimits", "ToolResult", "ToolSpec"]

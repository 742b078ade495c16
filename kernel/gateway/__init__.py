"""An OpenAI-compatible HTTP gateway to the kernel: existing OpenAI clients and frameworks run on AIOS unchanged.

`aios gateway --listen 127.0.0.1:8000 --keys FILE` (kernel/gateway/server.py) serves /v1/models, /v1/chat/completions
and /v1/completions (kernel/gateway/app.py); each API key (kernel/gateway/keys.py) is a kernel agent of its own, reached
through the asyncio SDK (kernel/gateway/agents.py); kernel errors are HTTP errors (kernel/gateway/errors.py); streams
are
server-sent events, cancelled in the kernel when the client leaves (kernel/gateway/streaming.py).
"""

from kernel.gateway.app import create_app

__all__ = ["create_app"]

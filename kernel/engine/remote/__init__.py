"""The remote engine: the kernel's engine interface over a pool of OpenAI-compatible servers (engine.py), one concept
per module — HTTP (http.py), a server's stream dialects (chunks.py), one streamed attempt (call.py), replicas
(replica.py), prefix-affinity routing (router.py), health checks (health.py), tokenization (tokenizer.py)."""

from kernel.engine.remote.engine import RemoteEngine

__all__ = ["RemoteEngine"]

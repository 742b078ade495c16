"""The shape of a llama-family model, whichever file it came from."""
from __future__ import annotations

from dataclasses import dataclass


class ModelLoadError(ValueError):
    """A model file or folder that cannot be loaded: missing, corrupt, or an architecture we do not run."""


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_size: int
    rms_eps: float
    rope_theta: float
    max_context: int
    tie_embeddings: bool

    def validate(self) -> None:
        if min(self.vocab_size, self.hidden_size, self.n_layers, self.n_heads, self.n_kv_heads, self.head_dim,
               self.ffn_size, self.max_context) <= 0:
            raise ModelLoadError(f"model config has a non-positive dimension: {self}")
        if self.n_heads % self.n_kv_heads:
            raise ModelLoadError(f"{self.n_heads} attention heads do not group evenly over {self.n_kv_heads} KV heads")
        if self.head_dim % 2:
            raise ModelLoadError(f"rotary embeddings need an even head_dim, got {self.head_dim}")


def weight_shapes(cfg: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor the forward pass needs, by its canonical name (loaders map their file's names onto these)."""
    q_dim, kv_dim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    shapes: dict[str, tuple[int, ...]] = {"embed": (cfg.vocab_size, cfg.hidden_size), "norm": (cfg.hidden_size,)}
    if not cfg.tie_embeddings:
        shapes["lm_head"] = (cfg.vocab_size, cfg.hidden_size)
    for i in range(cfg.n_layers):
        shapes.update({
            f"layers.{i}.attn_norm": (cfg.hidden_size,),
            f"layers.{i}.q": (q_dim, cfg.hidden_size),
            f"layers.{i}.k": (kv_dim, cfg.hidden_size),
            f"layers.{i}.v": (kv_dim, cfg.hidden_size),
            f"layers.{i}.o": (cfg.hidden_size, q_dim),
            f"layers.{i}.mlp_norm": (cfg.hidden_size,),
            f"layers.{i}.gate": (cfg.ffn_size, cfg.hidden_size),
            f"layers.{i}.up": (cfg.ffn_size, cfg.hidden_size),
            f"layers.{i}.down": (cfg.hidden_size, cfg.ffn_size),
        })
    return shapes


def check_weights(cfg: LlamaConfig, weights: dict, source: str) -> None:
    """Raise ModelLoadError naming the first missing or misshapen tensor."""
    for name, shape in weight_shapes(cfg).items():
        if name not in weights:
            raise ModelLoadError(f"{source}: tensor {name!r} is missing")
        if tuple(weights[name].shape) != shape:
            raise ModelLoadError(f"{source}: tensor {name!r} has shape {tuple(weights[name].shape)}, expected {shape}")

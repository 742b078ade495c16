"""One model definition for the decoder families we run, whichever file it came from: their differences are data here.

Llama, Mistral, Qwen2, Qwen3, Gemma 3 and Phi-3 are one decoder (RMSNorm, rotary, grouped-query attention over a paged
KV cache, gated MLP) that differ in a handful of switches: q/k/v biases, per-head q/k RMSNorm, a sliding attention
window on some layers (with their own rotary base), norms after attention and MLP as well as before, Gemma's (1 + w)
norms, the MLP's activation, an embedding scale and the query scale. Loaders map each family's metadata and tensor names
onto this (gguf_loader.py, safetensors_loader.py) and refuse whatever changes the computation and is not expressed here;
kernel/engine/cpu/model.py computes it; native_gaps() names what the fused native path lacks, so the model can fall back
to the torch ops at load rather than compute something else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from kernel.engine.loading.load_errors import ModelLoadError
from kernel.engine.loading.rope import Rope

__all__ = ["Activation", "Family", "LlamaConfig", "ModelConfig", "ModelLoadError", "check_weights", "weight_shapes"]


class Family(Enum):
    LLAMA = "llama"
    MISTRAL = "mistral"
    QWEN2 = "qwen2"
    QWEN3 = "qwen3"
    GEMMA3 = "gemma3"
    PHI3 = "phi3"  # llama's math; its files fuse q/k/v and gate/up into one matrix each (gguf_names.split_fused)


class Activation(Enum):
    SILU = "silu"  # SwiGLU: silu(gate) * up
    GELU_TANH = "gelu_tanh"  # GeGLU with the tanh approximation (Gemma)


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_size: int
    rms_eps: float
    rope: Rope
    max_context: int
    tie_embeddings: bool
    family: Family = Family.LLAMA
    qkv_bias: bool = False
    qk_norm: bool = False  # RMSNorm over each head of q and k, before rotary
    post_norms: bool = False  # RMSNorm of the attention and MLP outputs before the residual add
    norm_offset: float = 0.0  # norms multiply by (offset + w): Gemma's files store w - 1
    activation: Activation = Activation.SILU
    embed_scale: float = 1.0  # embeddings multiplied by this on lookup (Gemma: sqrt(E))
    query_scale: float | None = None  # attention logits' scale; None: head_dim ** -0.5
    sliding_window: int | None = None  # a sliding layer's query attends to the last W positions (itself incl.)
    sliding_layers: tuple[bool, ...] = ()  # per layer; () = no layer slides
    local_rope: Rope | None = None  # the sliding layers' own rotary (Gemma 3); None = the same as rope

    @property
    def rope_theta(self) -> float:
        return self.rope.theta

    def window(self, layer: int) -> int | None:
        """The attention window of a layer, None when it attends to its whole context."""
        if self.sliding_window is not None and self.sliding_layers and self.sliding_layers[layer]:
            return self.sliding_window
        return None

    def layer_rope(self, layer: int) -> Rope:
        return self.local_rope if self.local_rope is not None and self.window(layer) is not None else self.rope

    def native_gaps(self) -> list[str]:
        """The features this model needs that the fused native ops and layer loop (cpu/native/) do not compute: they
        compute every switch above (q/k/v biases, q/k norms, post norms, both activations, the query scale, sliding
        windows, per-layer rotary tables); their attention keeps a head in a fixed buffer of 512 values."""
        return ["head size over 512"] if self.head_dim > 512 else []

    def validate(self) -> None:
        if (
            min(
                self.vocab_size,
                self.hidden_size,
                self.n_layers,
                self.n_heads,
                self.n_kv_heads,
                self.head_dim,
                self.ffn_size,
                self.max_context,
            )
            <= 0
        ):
            raise ModelLoadError(f"model config has a non-positive dimension: {self}")
        if self.n_heads % self.n_kv_heads:
            raise ModelLoadError(f"{self.n_heads} attention heads do not group evenly over {self.n_kv_heads} KV heads")
        if self.head_dim % 2:
            raise ModelLoadError(f"rotary embeddings need an even head_dim, got {self.head_dim}")
        if self.sliding_layers and len(self.sliding_layers) != self.n_layers:
            raise ModelLoadError(f"{len(self.sliding_layers)} layer types for {self.n_layers} layers")
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise ModelLoadError(f"sliding window must be positive, got {self.sliding_window}")


LlamaConfig = ModelConfig  # the name before the families; kept for callers that still use it


def weight_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor the forward pass needs, by its canonical name (loaders map their file's names onto these)."""
    q_dim, kv_dim, e = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.hidden_size
    shapes: dict[str, tuple[int, ...]] = {"embed": (cfg.vocab_size, e), "norm": (e,)}
    if not cfg.tie_embeddings:
        shapes["lm_head"] = (cfg.vocab_size, e)
    for i in range(cfg.n_layers):
        layer = {
            "attn_norm": (e,),
            "q": (q_dim, e),
            "k": (kv_dim, e),
            "v": (kv_dim, e),
            "o": (e, q_dim),
            "mlp_norm": (e,),
            "gate": (cfg.ffn_size, e),
            "up": (cfg.ffn_size, e),
            "down": (e, cfg.ffn_size),
        }
        if cfg.qkv_bias:
            layer.update(q_bias=(q_dim,), k_bias=(kv_dim,), v_bias=(kv_dim,))
        if cfg.qk_norm:
            layer.update(q_norm=(cfg.head_dim,), k_norm=(cfg.head_dim,))
        if cfg.post_norms:
            layer.update(post_attn_norm=(e,), post_mlp_norm=(e,))
        shapes.update({f"layers.{i}.{name}": shape for name, shape in layer.items()})
    return shapes


def check_weights(cfg: ModelConfig, weights: dict, source: str) -> None:
    """Raise ModelLoadError naming the first missing, misshapen or unexpected tensor."""
    shapes = weight_shapes(cfg)
    for name, shape in shapes.items():
        if name not in weights:
            raise ModelLoadError(f"{source}: tensor {name!r} is missing")
        if tuple(weights[name].shape) != shape:
            raise ModelLoadError(f"{source}: tensor {name!r} has shape {tuple(weights[name].shape)}, expected {shape}")
    unused = sorted(set(weights) - set(shapes))
    if unused:
        raise ModelLoadError(f"{source}: tensor {unused[0]!r} is not used by a {cfg.family.value} model of this config")

// Every layer of a pure-decode step in one call: the same ops, in the same order, as model.py's Python loop
// (kernel/engine/cpu/model.py), with the weight products called from here. A decode step is ~300 small calls; from
// Python each costs a few microseconds of interpreter and dispatcher before its work, ~1 ms of a 9 ms batch-1 step.
// When every product is a block format the whole loop is one job on the library's worker pool (decode_pool.cpp), the
// same values in the same order; AIOS_NATIVE_POOL=0 keeps it on the ops below (each its own OpenMP region), to compare.
#include "ops.h"
#include "pool.h"

namespace aios {
namespace {

// How a layer's product multiplies (native/__init__.py, ProductKind): torch's integer kernels take bfloat16 inputs;
// the block kinds are qgemm's formats (qgemm.h), offset by Q8_0.
enum Kind : int64_t {
  INT4 = 0, INT8 = 1, FLOAT = 2, Q8_0 = 3, Q4_0 = 4, Q4_1 = 5, Q5_0 = 6, Q4_K = 7, Q6_K = 8, Q5_K = 9, Q5_1 = 10
};

at::Tensor product(const at::Tensor& x, int64_t kind, const at::Tensor& a, const at::Tensor& b, int64_t int4_group) {
  if (kind >= Q8_0) return qgemm(x, a, b, kind - Q8_0, -1);
  if (kind == FLOAT) {
    if (a.scalar_type() == x.scalar_type()) return at::linear(x, a);
    return at::linear(x.to(a.scalar_type()), a).to(x.scalar_type());
  }
  const at::Tensor input = x.scalar_type() == at::kBFloat16 ? x : x.to(at::kBFloat16);
  at::Tensor y = kind == INT4 ? at::_weight_int4pack_mm_for_cpu(input, a, int4_group, b)
                              : at::_weight_int8pack_mm(input, a, b);
  return y.scalar_type() == x.scalar_type() ? y : y.to(x.scalar_type());
}

}  // namespace

// x [T, E], the residual stream of T single-token rows, advanced in place through every layer, each layer as ops.h
// lays its arguments out. kv: [L, 2, slots, Hkv, D]. The rest as rope_write and decode_attention take them; scale:
// the attention logits' (D^-1/2 unless the model says otherwise); gelu: GeGLU (tanh) rather than SwiGLU.
void decode_layers(at::Tensor x, const std::vector<at::Tensor>& norms, const std::vector<int64_t>& kinds,
                   const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& extras,
                   const std::vector<at::Tensor>& cos, const std::vector<at::Tensor>& signed_sin,
                   const std::vector<int64_t>& windows, const at::Tensor& positions, at::Tensor kv,
                   const at::Tensor& slots, const at::Tensor& block_tables, const at::Tensor& context_lens,
                   int64_t block_size, int64_t n_heads, int64_t n_kv_heads, int64_t int4_group, double eps,
                   double scale, bool gelu) {
  TORCH_CHECK(kv.dim() == 5 && kv.size(0) > 0 && x.dim() == 2, "kv must be [L, 2, S, Hkv, D], x [rows, E]");
  const int64_t layers = kv.size(0), rows = x.size(0), head_dim = kv.size(4), E = x.size(1);
  const auto count = [](const auto& list) { return static_cast<int64_t>(list.size()); };
  TORCH_CHECK(count(norms) == 2 * layers && count(kinds) == 4 * layers && count(weights) == 8 * layers &&
              count(extras) == kExtras * layers && count(cos) == layers && count(signed_sin) == layers &&
              count(windows) == layers, "one set of norms, kinds, weights, extras, rotary tables and window per layer");
  for (int64_t kind : kinds) TORCH_CHECK(kind >= INT4 && kind <= Q5_1, "unknown product kind");
  TORCH_CHECK(scale > 0 && n_kv_heads > 0, "the attention scale must be positive");
  const int64_t sizes[kExtras] = {(n_heads + 2 * n_kv_heads) * head_dim, head_dim, head_dim, E, E};
  for (int64_t i = 0; i < count(extras); ++i) {
    const at::Tensor& e = extras[i];
    const at::Tensor& first = extras[i % kExtras];   // layer 0's: every layer has the same features
    TORCH_CHECK(e.numel() == 0 || (e.is_contiguous() && e.numel() == sizes[i % kExtras] &&
                                   e.scalar_type() == x.scalar_type()), "layer extra ", i, " has the wrong shape");
    TORCH_CHECK((e.numel() == 0) == (first.numel() == 0), "every layer has the same extras");
  }
  TORCH_CHECK((extras[kQNorm].numel() == 0) == (extras[kKNorm].numel() == 0), "q and k norms come together");
  if (pool::use() != pool::Use::NONE &&
      decode_layers_pooled(x, norms, kinds, weights, extras, cos, signed_sin, windows, positions, kv, slots,
                           block_tables, context_lens, block_size, n_heads, n_kv_heads, eps, scale, gelu)) {
    return;
  }
  auto mul = [&](const at::Tensor& in, int64_t p) {
    return product(in, kinds[p], weights[2 * p], weights[2 * p + 1], int4_group);
  };
  auto extra = [&](int64_t l, Extra e) -> c10::optional<at::Tensor> {
    const at::Tensor& t = extras[kExtras * l + e];
    return t.numel() ? c10::optional<at::Tensor>(t) : c10::nullopt;
  };
  // a norm of a product's output before the residual add (Gemma's post norms): rms_norm(y) * w, y unchanged
  auto post_norm = [&](const at::Tensor& y, int64_t l, Extra e) {
    const auto w = extra(l, e);
    return w ? add_rms_norm(y, c10::nullopt, *w, eps) : y;
  };
  at::Tensor h = add_rms_norm(x, c10::nullopt, norms[0], eps);
  for (int64_t l = 0; l < layers; ++l) {
    at::Tensor cache = kv[l];
    at::Tensor qkv = mul(h, 4 * l);
    if (const auto bias = extra(l, kQkvBias)) qkv.add_(*bias);
    std::vector<at::Tensor> qk = rope_write(qkv, cos[l], signed_sin[l], positions, cache, slots, n_heads, n_kv_heads,
                                            extra(l, kQNorm), extra(l, kKNorm), eps);
    at::Tensor attn = decode_attention(qk[0], cache, block_tables, context_lens, block_size, scale, windows[l]);
    at::Tensor o = post_norm(mul(attn.view({rows, n_heads * head_dim}), 4 * l + 1), l, kPostAttnNorm);
    h = add_rms_norm(x, o, norms[2 * l + 1], eps);
    at::Tensor mlp = post_norm(mul(gate_mul(mul(h, 4 * l + 2), gelu), 4 * l + 3), l, kPostMlpNorm);
    if (l + 1 < layers) {
      h = add_rms_norm(x, mlp, norms[2 * l + 2], eps);
    } else {
      x.add_(mlp);
    }
  }
}

}  // namespace aios

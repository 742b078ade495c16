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

// x [T, E], the residual stream of T single-token rows, advanced in place through every layer. Per layer l: norms
// 2l (attention) and 2l + 1 (MLP); products 4l .. 4l + 3 (qkv, o, gate_up, down), kinds[p] with weights 2p, 2p + 1.
// kv: [L, 2, slots, Hkv, D]. The rest as rope_write and decode_attention take them.
void decode_layers(at::Tensor x, const std::vector<at::Tensor>& norms, const std::vector<int64_t>& kinds,
                   const std::vector<at::Tensor>& weights, const at::Tensor& cos, const at::Tensor& signed_sin,
                   const at::Tensor& positions, at::Tensor kv, const at::Tensor& slots, const at::Tensor& block_tables,
                   const at::Tensor& context_lens, int64_t block_size, int64_t n_heads, int64_t n_kv_heads,
                   int64_t int4_group, double eps) {
  const int64_t layers = kv.size(0), rows = x.size(0), head_dim = kv.size(4);
  TORCH_CHECK(static_cast<int64_t>(norms.size()) == 2 * layers && static_cast<int64_t>(kinds.size()) == 4 * layers &&
              static_cast<int64_t>(weights.size()) == 8 * layers, "one set of norms, kinds and weights per layer");
  for (int64_t kind : kinds) TORCH_CHECK(kind >= INT4 && kind <= Q5_1, "unknown product kind");
  if (pool::use() != pool::Use::NONE &&
      decode_layers_pooled(x, norms, kinds, weights, cos, signed_sin, positions, kv, slots, block_tables, context_lens,
                           block_size, n_heads, n_kv_heads, eps)) {
    return;
  }
  auto mul = [&](const at::Tensor& in, int64_t p) {
    return product(in, kinds[p], weights[2 * p], weights[2 * p + 1], int4_group);
  };
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  at::Tensor h = add_rms_norm(x, c10::nullopt, norms[0], eps);
  for (int64_t l = 0; l < layers; ++l) {
    at::Tensor cache = kv[l];
    std::vector<at::Tensor> qk = rope_write(mul(h, 4 * l), cos, signed_sin, positions, cache, slots, n_heads,
                                            n_kv_heads);
    at::Tensor attn = decode_attention(qk[0], cache, block_tables, context_lens, block_size, scale);
    h = add_rms_norm(x, mul(attn.view({rows, n_heads * head_dim}), 4 * l + 1), norms[2 * l + 1], eps);
    at::Tensor mlp = mul(silu_mul(mul(h, 4 * l + 2)), 4 * l + 3);
    if (l + 1 < layers) {
      h = add_rms_norm(x, mlp, norms[2 * l + 2], eps);
    } else {
      x.add_(mlp);
    }
  }
}

}  // namespace aios

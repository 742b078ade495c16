// The native ops (ops.cpp), the block-quantized products (qgemm.cpp) and the decode layer loop built on them
// (decode_layers.cpp), registered as torch.ops.aios_cpu.
#pragma once

#include <torch/extension.h>

#include <vector>

namespace aios {

at::Tensor add_rms_norm(at::Tensor x, const c10::optional<at::Tensor>& delta, const at::Tensor& w, double eps);
std::vector<at::Tensor> rope_write(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& signed_sin,
                                   const at::Tensor& positions, at::Tensor cache, const at::Tensor& slots,
                                   int64_t n_heads, int64_t n_kv_heads, const c10::optional<at::Tensor>& q_norm,
                                   const c10::optional<at::Tensor>& k_norm, double eps);
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& cache, const at::Tensor& block_tables,
                            const at::Tensor& context_lens, int64_t block_size, double scale, int64_t window);
at::Tensor gate_mul(const at::Tensor& gate_up, bool gelu);
// Per layer l of decode_layers: norms 2l, 2l + 1; products 4l .. 4l + 3 (kinds[p], weights 2p, 2p + 1); extras 5l ..
// 5l + 4: qkv bias, q norm, k norm, post-attention norm, post-MLP norm, each an empty tensor where the model has none;
// cos[l], signed_sin[l], windows[l] (0: the whole context).
constexpr int64_t kExtras = 5;
enum Extra : int64_t { kQkvBias, kQNorm, kKNorm, kPostAttnNorm, kPostMlpNorm };
void decode_layers(at::Tensor x, const std::vector<at::Tensor>& norms, const std::vector<int64_t>& kinds,
                   const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& extras,
                   const std::vector<at::Tensor>& cos, const std::vector<at::Tensor>& signed_sin,
                   const std::vector<int64_t>& windows, const at::Tensor& positions, at::Tensor kv,
                   const at::Tensor& slots, const at::Tensor& block_tables, const at::Tensor& context_lens,
                   int64_t block_size, int64_t n_heads, int64_t n_kv_heads, int64_t int4_group, double eps,
                   double scale, bool gelu);
// decode_layers on the library's worker pool (decode_pool.cpp); false when its products are not all block formats.
// Its arguments are checked by decode_layers first, bar the products'.
bool decode_layers_pooled(at::Tensor x, const std::vector<at::Tensor>& norms, const std::vector<int64_t>& kinds,
                          const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& extras,
                          const std::vector<at::Tensor>& cos, const std::vector<at::Tensor>& signed_sin,
                          const std::vector<int64_t>& windows, const at::Tensor& positions, at::Tensor kv,
                          const at::Tensor& slots, const at::Tensor& block_tables, const at::Tensor& context_lens,
                          int64_t block_size, int64_t n_heads, int64_t n_kv_heads, double eps, double scale, bool gelu);
at::Tensor qgemm(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales, int64_t format, int64_t isa);

}  // namespace aios

// The decode step's small ops, fused: each replaces 2-12 torch ops whose dispatch cost more than their arithmetic at
// the few rows a decode step has (kernel/engine/cpu/native/__init__.py says which and why). Every op computes in
// float32 and rounds its result once to the tensors' dtype (float32, bfloat16 or float16). Each row (and each
// sequence in decode_attention) is computed alone in a fixed order, so a row's result never depends on what else is
// in the batch.
#include "ops.h"
#include "ops_rows.h"

#include <ATen/Parallel.h>

#include <vector>

namespace aios {
namespace {

void check_rows(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.stride(1) == 1, name, " must be [rows, n] with unit stride along n");
}

}  // namespace

// x [T, E] (in place: x += delta when delta is given); returns rms_norm(x) * w as a new [T, E].
at::Tensor add_rms_norm(at::Tensor x, const c10::optional<at::Tensor>& delta, const at::Tensor& w, double eps) {
  check_rows(x, "x");
  TORCH_CHECK(w.is_contiguous() && w.numel() == x.size(1) && w.scalar_type() == x.scalar_type(), "bad norm weight");
  const int64_t rows = x.size(0), n = x.size(1);
  auto out = at::empty({rows, n}, x.options());
  if (delta) {
    check_rows(*delta, "delta");
    TORCH_CHECK(delta->sizes() == x.sizes() && delta->scalar_type() == x.scalar_type(), "delta must match x");
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "add_rms_norm", [&] {
    scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* dp = delta ? delta->data_ptr<scalar_t>() : nullptr;
    const int64_t xs = x.stride(0), ds = delta ? delta->stride(0) : 0;
    const scalar_t* wp = w.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        row_ops::add_rms_norm_row(xp + r * xs, dp ? dp + r * ds : nullptr, wp, n, eps, op + r * n);
      }
    });
  });
  return out;
}

// qkv [T, (H + 2 Hkv) D]: rotary (rotate-half, signed_sin = [-sin, sin]) on q and k at each row's position, each
// head RMS-normed first by q_norm / k_norm [D] when given (Qwen3, Gemma 3); k and v are written to the cache
// cache[0/1][slots[t]] ([2, S, Hkv, D]); returns (q [T, H, D], k [T, Hkv, D]).
std::vector<at::Tensor> rope_write(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& signed_sin,
                                   const at::Tensor& positions, at::Tensor cache, const at::Tensor& slots,
                                   int64_t n_heads, int64_t n_kv_heads, const c10::optional<at::Tensor>& q_norm,
                                   const c10::optional<at::Tensor>& k_norm, double eps) {
  check_rows(qkv, "qkv");
  TORCH_CHECK(cache.dim() == 4 && cache.size(0) == 2 && cache.is_contiguous(), "cache must be [2, S, Hkv, D]");
  const int64_t rows = qkv.size(0), D = cache.size(3), S = cache.size(1);
  TORCH_CHECK(cache.size(2) == n_kv_heads && qkv.size(1) == (n_heads + 2 * n_kv_heads) * D, "qkv/cache shapes");
  TORCH_CHECK(cos.is_contiguous() && signed_sin.is_contiguous() && cos.size(1) == D, "rotary tables must be [P, D]");
  TORCH_CHECK(positions.scalar_type() == at::kLong && slots.scalar_type() == at::kLong &&
              positions.numel() == rows && slots.numel() == rows, "positions and slots: [T] int64");
  TORCH_CHECK(qkv.scalar_type() == cache.scalar_type() && cos.scalar_type() == qkv.scalar_type(), "dtypes differ");
  TORCH_CHECK(q_norm.has_value() == k_norm.has_value(), "q and k norms come together");
  TORCH_CHECK(!q_norm.has_value() || D <= 512, "q/k norms: head size at most 512");   // norm_rope_head's buffer
  for (const auto* w : {&q_norm, &k_norm}) {
    TORCH_CHECK(!w->has_value() || (w->value().is_contiguous() && w->value().numel() == D &&
                                    w->value().scalar_type() == qkv.scalar_type()), "q/k norm weights must be [D]");
  }
  auto q = at::empty({rows, n_heads, D}, qkv.options());
  auto k = at::empty({rows, n_kv_heads, D}, qkv.options());
  const int64_t P = cos.size(0);
  auto pos = positions.contiguous();
  auto slot = slots.contiguous();
  const int64_t* pp = pos.data_ptr<int64_t>();
  const int64_t* sp = slot.data_ptr<int64_t>();
  for (int64_t t = 0; t < rows; ++t) {
    TORCH_CHECK(pp[t] >= 0 && pp[t] < P && sp[t] >= 0 && sp[t] < S, "position or slot out of range");
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, qkv.scalar_type(), "rope_write", [&] {
    const scalar_t* in = qkv.data_ptr<scalar_t>();
    const int64_t in_stride = qkv.stride(0);
    const scalar_t* cp = cos.data_ptr<scalar_t>();
    const scalar_t* sn = signed_sin.data_ptr<scalar_t>();
    scalar_t* qp = q.data_ptr<scalar_t>();
    scalar_t* kp = k.data_ptr<scalar_t>();
    scalar_t* kc = cache.data_ptr<scalar_t>();
    scalar_t* vc = kc + S * n_kv_heads * D;
    const scalar_t* qn = q_norm ? q_norm->data_ptr<scalar_t>() : nullptr;
    const scalar_t* kn = k_norm ? k_norm->data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const scalar_t* row = in + t * in_stride;
        const scalar_t* c = cp + pp[t] * D;
        const scalar_t* s = sn + pp[t] * D;
        for (int64_t h = 0; h < n_heads + n_kv_heads; ++h) {
          scalar_t* o = h < n_heads ? qp + (t * n_heads + h) * D : kp + (t * n_kv_heads + h - n_heads) * D;
          row_ops::norm_rope_head(row + h * D, h < n_heads ? qn : kn, eps, c, s, D, o);
        }
        const scalar_t* v = row + (n_heads + n_kv_heads) * D;
        std::copy(kp + t * n_kv_heads * D, kp + (t + 1) * n_kv_heads * D, kc + sp[t] * n_kv_heads * D);
        std::copy(v, v + n_kv_heads * D, vc + sp[t] * n_kv_heads * D);
      }
    });
  });
  return {q, k};
}

// Single-token queries over paged contexts. q [B, H, D]; cache [2, S, Hkv, D]; block_tables [B, max_blocks] int64;
// context_lens [B] int64 (the context includes the query's own token, already written); window > 0: each query
// attends to its context's last `window` tokens only (a sliding layer). Returns [B, H, D]. Grouped-query attention:
// the H / Hkv query heads of a KV head share one pass over its keys and values.
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& cache, const at::Tensor& block_tables,
                            const at::Tensor& context_lens, int64_t block_size, double scale, int64_t window) {
  TORCH_CHECK(q.dim() == 3 && q.is_contiguous(), "q must be contiguous [B, H, D]");
  TORCH_CHECK(cache.dim() == 4 && cache.size(0) == 2 && cache.is_contiguous(), "cache must be [2, S, Hkv, D]");
  TORCH_CHECK(block_tables.scalar_type() == at::kLong && context_lens.scalar_type() == at::kLong, "int64 tables");
  const int64_t B = q.size(0), H = q.size(1), D = q.size(2), S = cache.size(1), Hkv = cache.size(2);
  TORCH_CHECK(cache.size(3) == D && D <= 512 && H % Hkv == 0 && q.scalar_type() == cache.scalar_type(),
              "q/cache shapes (head size at most 512)");
  auto tables = block_tables.contiguous();
  auto lens = context_lens.contiguous();
  TORCH_CHECK(tables.dim() == 2 && tables.size(0) == B && lens.numel() == B, "one table and length per query");
  const int64_t max_blocks = tables.size(1), G = H / Hkv;
  const int64_t* tp = tables.data_ptr<int64_t>();
  const int64_t* lp = lens.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(lp[b] > 0 && lp[b] <= max_blocks * block_size, "context length out of range");
    for (int64_t i = 0; i < (lp[b] + block_size - 1) / block_size; ++i) {
      TORCH_CHECK(tp[b * max_blocks + i] >= 0 && (tp[b * max_blocks + i] + 1) * block_size <= S, "block out of range");
    }
  }
  auto out = at::empty_like(q);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "decode_attention", [&] {
    const scalar_t* qp = q.data_ptr<scalar_t>();
    const scalar_t* kc = cache.data_ptr<scalar_t>();
    const scalar_t* vc = kc + S * Hkv * D;
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, B * Hkv, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> query(G * D), acc(G * D), scores;
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / Hkv, g = task % Hkv, n = lp[b], first = row_ops::window_start(n, window);
        const int64_t* table = tp + b * max_blocks;
        const int64_t head0 = (b * H + g * G) * D;
        scores.resize(G * (n - first));
        row_ops::attend_heads(qp + head0, G, D, scale, kc, vc, Hkv, g, table, first, n, block_size, query.data(),
                              scores.data(), acc.data(), op + head0);
      }
    });
  });
  return out;
}

// gate_up [T, 2F] → silu(gate) * up [T, F], or gelu_tanh(gate) * up with gelu (Gemma).
at::Tensor gate_mul(const at::Tensor& gate_up, bool gelu) {
  check_rows(gate_up, "gate_up");
  const int64_t rows = gate_up.size(0), F = gate_up.size(1) / 2;
  auto out = at::empty({rows, F}, gate_up.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gate_up.scalar_type(), "gate_mul", [&] {
    const scalar_t* in = gate_up.data_ptr<scalar_t>();
    const int64_t stride = gate_up.stride(0);
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, 4, [&](int64_t begin, int64_t end) {
      std::vector<float> gate(F), up(F);
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* row = in + r * stride;
        if (gelu) {
          row_ops::gelu_mul_row(row, row + F, F, gate.data(), up.data(), op + r * F);
        } else {
          row_ops::silu_mul_row(row, row + F, F, gate.data(), up.data(), op + r * F);
        }
      }
    });
  });
  return out;
}

at::Tensor silu_mul(const at::Tensor& gate_up) { return gate_mul(gate_up, false); }
at::Tensor gelu_mul(const at::Tensor& gate_up) { return gate_mul(gate_up, true); }

}  // namespace aios

TORCH_LIBRARY(aios_cpu, m) {
  using namespace aios;
  m.def("add_rms_norm(Tensor(a!) x, Tensor? delta, Tensor w, float eps) -> Tensor", &add_rms_norm);
  m.def("rope_write(Tensor qkv, Tensor cos, Tensor signed_sin, Tensor positions, Tensor(a!) cache, Tensor slots, "
        "int n_heads, int n_kv_heads, Tensor? q_norm=None, Tensor? k_norm=None, float eps=1e-6) -> Tensor[]",
        &rope_write);
  m.def("decode_attention(Tensor q, Tensor cache, Tensor block_tables, Tensor context_lens, int block_size, "
        "float scale, int window=0) -> Tensor", &decode_attention);
  m.def("silu_mul(Tensor gate_up) -> Tensor", &silu_mul);
  m.def("gelu_mul(Tensor gate_up) -> Tensor", &gelu_mul);
  m.def("decode_layers(Tensor(a!) x, Tensor[] norms, int[] kinds, Tensor[] weights, Tensor[] extras, Tensor[] cos, "
        "Tensor[] signed_sin, int[] windows, Tensor positions, Tensor(a!) kv, Tensor slots, Tensor block_tables, "
        "Tensor context_lens, int block_size, int n_heads, int n_kv_heads, int int4_group, float eps, float scale, "
        "bool gelu) -> ()", &decode_layers);
}

// The decode step's small ops, fused: each replaces 2-12 torch ops whose dispatch cost more than their arithmetic at
// the few rows a decode step has (kernel/engine/cpu/native/__init__.py says which and why). Every op computes in
// float32 and rounds its result once to the tensors' dtype (float32, bfloat16 or float16). Each row (and each
// sequence in decode_attention) is computed alone in a fixed order, so a row's result never depends on what else is
// in the batch.
#include "ops.h"

#include <ATen/Parallel.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace aios {
namespace {

template <typename T> inline float f32(T v) { return static_cast<float>(v); }

// A row as float32 into out: bfloat16 widened by a shift (what the compiler vectorizes; c10's conversion it does not).
template <typename T> inline void widen(const T* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = f32(in[i]);
}
template <> inline void widen(const c10::BFloat16* in, float* out, int64_t n) {
  const uint16_t* bits = reinterpret_cast<const uint16_t*>(in);
  uint32_t* wide = reinterpret_cast<uint32_t*>(out);
  _Pragma("omp simd")
  for (int64_t i = 0; i < n; ++i) wide[i] = static_cast<uint32_t>(bits[i]) << 16;
}

// exp(x) in float32 within a few ulp (Cephes' expf): x = k ln2 + r with |r| <= ln2 / 2, e^r by a degree-7 polynomial,
// 2^k from exponent bits. Plain arithmetic and a bit cast, so a simd loop vectorizes it: glibc's expf is a scalar call
// (its vector form needs -ffast-math, which would also let the compiler assume no NaN or infinity anywhere).
inline float exp_f32(float x) {
  x = std::min(std::max(x, -87.3f), 88.7f);                   // NaN passes through both
  const float shift = 12582912.f;                             // 1.5 * 2^23: adding it rounds to an integer
  const float k = (x * 1.44269504088896341f + shift) - shift;
  float r = x - k * 0.693359375f;                             // ln 2 in two parts (Cody-Waite)
  r = r - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.f;
  return y * std::bit_cast<float>((static_cast<int32_t>(k) + 127) << 23);
}

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
        scalar_t* xr = xp + r * xs;
        if (dp) {
          const scalar_t* dr = dp + r * ds;
          for (int64_t i = 0; i < n; ++i) xr[i] = static_cast<scalar_t>(f32(xr[i]) + f32(dr[i]));
        }
        float ss = 0.f;
        _Pragma("omp simd reduction(+ : ss)")
        for (int64_t i = 0; i < n; ++i) ss += f32(xr[i]) * f32(xr[i]);
        const float inv = 1.f / std::sqrt(ss / static_cast<float>(n) + static_cast<float>(eps));
        scalar_t* o = op + r * n;
        for (int64_t i = 0; i < n; ++i) o[i] = static_cast<scalar_t>(f32(xr[i]) * inv * f32(wp[i]));
      }
    });
  });
  return out;
}

// qkv [T, (H + 2 Hkv) D]: rotary (rotate-half, signed_sin = [-sin, sin]) on q and k at each row's position; k and v
// are written to the cache cache[0/1][slots[t]] ([2, S, Hkv, D]); returns (q [T, H, D], k [T, Hkv, D]).
std::vector<at::Tensor> rope_write(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& signed_sin,
                                   const at::Tensor& positions, at::Tensor cache, const at::Tensor& slots,
                                   int64_t n_heads, int64_t n_kv_heads) {
  check_rows(qkv, "qkv");
  TORCH_CHECK(cache.dim() == 4 && cache.size(0) == 2 && cache.is_contiguous(), "cache must be [2, S, Hkv, D]");
  const int64_t rows = qkv.size(0), D = cache.size(3), S = cache.size(1), half = D / 2;
  TORCH_CHECK(cache.size(2) == n_kv_heads && qkv.size(1) == (n_heads + 2 * n_kv_heads) * D, "qkv/cache shapes");
  TORCH_CHECK(cos.is_contiguous() && signed_sin.is_contiguous() && cos.size(1) == D, "rotary tables must be [P, D]");
  TORCH_CHECK(positions.scalar_type() == at::kLong && slots.scalar_type() == at::kLong &&
              positions.numel() == rows && slots.numel() == rows, "positions and slots: [T] int64");
  TORCH_CHECK(qkv.scalar_type() == cache.scalar_type() && cos.scalar_type() == qkv.scalar_type(), "dtypes differ");
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
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const scalar_t* row = in + t * in_stride;
        const scalar_t* c = cp + pp[t] * D;
        const scalar_t* s = sn + pp[t] * D;
        for (int64_t h = 0; h < n_heads + n_kv_heads; ++h) {
          const scalar_t* x = row + h * D;
          scalar_t* o = h < n_heads ? qp + (t * n_heads + h) * D : kp + (t * n_kv_heads + h - n_heads) * D;
          for (int64_t i = 0; i < D; ++i) {
            const int64_t j = i < half ? i + half : i - half;
            o[i] = static_cast<scalar_t>(f32(x[i]) * f32(c[i]) + f32(x[j]) * f32(s[i]));
          }
        }
        const scalar_t* v = row + (n_heads + n_kv_heads) * D;
        std::copy(kp + t * n_kv_heads * D, kp + (t + 1) * n_kv_heads * D, kc + sp[t] * n_kv_heads * D);
        std::copy(v, v + n_kv_heads * D, vc + sp[t] * n_kv_heads * D);
      }
    });
  });
  return {q, k};
}

namespace {

// One sequence's G query heads (sharing KV head g) over its n-token paged context: scores, softmax, weighted values.
// query: [G, D] float32, pre-scaled; scores: room for G * n floats; acc: [G, D] float32 result. DC is the head size
// when known at compile time (the common 64 and 128: loops the compiler unrolls into whole-register FMAs), else 0.
template <typename T, int64_t DC>
void attend(const float* query, int64_t G, int64_t d_runtime, const T* kc, const T* vc, int64_t Hkv, int64_t g,
            const int64_t* table, int64_t n, int64_t block_size, float* scores, float* acc) {
  const int64_t D = DC ? DC : d_runtime;
  alignas(64) float row[DC ? DC : 512];
  // block by block: the slot of token t is table[t / block_size] * block_size + t % block_size, without a division
  // per token
  for (int64_t t0 = 0; t0 < n; t0 += block_size) {
    const int64_t base = table[t0 / block_size] * block_size - t0, stop = std::min(n, t0 + block_size);
    for (int64_t t = t0; t < stop; ++t) {
      widen(kc + ((base + t) * Hkv + g) * D, row, D);
      for (int64_t h = 0; h < G; ++h) {
        const float* qh = query + h * D;
        float dot = 0.f;
        _Pragma("omp simd reduction(+ : dot)")
        for (int64_t i = 0; i < D; ++i) dot += qh[i] * row[i];
        scores[h * n + t] = dot;
      }
    }
  }
  for (int64_t h = 0; h < G; ++h) {
    float* s = scores + h * n;
    float top = -std::numeric_limits<float>::infinity();
    for (int64_t t = 0; t < n; ++t) top = std::max(top, s[t]);
    float sum = 0.f;
    _Pragma("omp simd reduction(+ : sum)")
    for (int64_t t = 0; t < n; ++t) {
      s[t] = exp_f32(s[t] - top);
      sum += s[t];
    }
    const float norm = 1.f / sum;
    for (int64_t t = 0; t < n; ++t) s[t] *= norm;
  }
  std::fill(acc, acc + G * D, 0.f);
  for (int64_t t0 = 0; t0 < n; t0 += block_size) {
    const int64_t base = table[t0 / block_size] * block_size - t0, stop = std::min(n, t0 + block_size);
    for (int64_t t = t0; t < stop; ++t) {
      widen(vc + ((base + t) * Hkv + g) * D, row, D);
      for (int64_t h = 0; h < G; ++h) {
        const float p = scores[h * n + t];
        float* a = acc + h * D;
        _Pragma("omp simd")
        for (int64_t i = 0; i < D; ++i) a[i] += p * row[i];
      }
    }
  }
}

}  // namespace

// Single-token queries over paged contexts. q [B, H, D]; cache [2, S, Hkv, D]; block_tables [B, max_blocks] int64;
// context_lens [B] int64 (the context includes the query's own token, already written). Returns [B, H, D]. Grouped-
// query attention: the H / Hkv query heads of a KV head share one pass over its keys and values.
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& cache, const at::Tensor& block_tables,
                            const at::Tensor& context_lens, int64_t block_size, double scale) {
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
        const int64_t b = task / Hkv, g = task % Hkv, n = lp[b];
        const int64_t* table = tp + b * max_blocks;
        for (int64_t i = 0; i < G * D; ++i) query[i] = f32(qp[(b * H + g * G) * D + i]) * static_cast<float>(scale);
        scores.resize(G * n);
        if (D == 64) {
          attend<scalar_t, 64>(query.data(), G, D, kc, vc, Hkv, g, table, n, block_size, scores.data(), acc.data());
        } else if (D == 128) {
          attend<scalar_t, 128>(query.data(), G, D, kc, vc, Hkv, g, table, n, block_size, scores.data(), acc.data());
        } else {
          attend<scalar_t, 0>(query.data(), G, D, kc, vc, Hkv, g, table, n, block_size, scores.data(), acc.data());
        }
        scalar_t* o = op + (b * H + g * G) * D;
        for (int64_t i = 0; i < G * D; ++i) o[i] = static_cast<scalar_t>(acc[i]);
      }
    });
  });
  return out;
}

// gate_up [T, 2F] → silu(gate) * up [T, F].
at::Tensor silu_mul(const at::Tensor& gate_up) {
  check_rows(gate_up, "gate_up");
  const int64_t rows = gate_up.size(0), F = gate_up.size(1) / 2;
  auto out = at::empty({rows, F}, gate_up.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gate_up.scalar_type(), "silu_mul", [&] {
    const scalar_t* in = gate_up.data_ptr<scalar_t>();
    const int64_t stride = gate_up.stride(0);
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, 4, [&](int64_t begin, int64_t end) {
      std::vector<float> gate(F), up(F);
      for (int64_t r = begin; r < end; ++r) {
        widen(in + r * stride, gate.data(), F);
        widen(in + r * stride + F, up.data(), F);
        float* g = gate.data();
        const float* u = up.data();
        _Pragma("omp simd")
        for (int64_t i = 0; i < F; ++i) g[i] = g[i] / (1.f + exp_f32(-g[i])) * u[i];
        scalar_t* o = op + r * F;
        for (int64_t i = 0; i < F; ++i) o[i] = static_cast<scalar_t>(g[i]);
      }
    });
  });
  return out;
}

}  // namespace aios

TORCH_LIBRARY(aios_cpu, m) {
  using namespace aios;
  m.def("add_rms_norm(Tensor(a!) x, Tensor? delta, Tensor w, float eps) -> Tensor", &add_rms_norm);
  m.def("rope_write(Tensor qkv, Tensor cos, Tensor signed_sin, Tensor positions, Tensor(a!) cache, Tensor slots, "
        "int n_heads, int n_kv_heads) -> Tensor[]", &rope_write);
  m.def("decode_attention(Tensor q, Tensor cache, Tensor block_tables, Tensor context_lens, int block_size, "
        "float scale) -> Tensor", &decode_attention);
  m.def("silu_mul(Tensor gate_up) -> Tensor", &silu_mul);
  m.def("decode_layers(Tensor(a!) x, Tensor[] norms, int[] kinds, Tensor[] weights, Tensor cos, Tensor signed_sin, "
        "Tensor positions, Tensor(a!) kv, Tensor slots, Tensor block_tables, Tensor context_lens, int block_size, "
        "int n_heads, int n_kv_heads, int int4_group, float eps) -> ()", &decode_layers);
}

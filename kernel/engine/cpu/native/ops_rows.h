// The row-level bodies of the decode step's small ops (ops.cpp), shared with the decode layer loop on the worker pool
// (decode_pool.cpp), so both compute every value by the same code in the same order: a row (or a sequence's heads of
// one KV head) at a time, in float32, each result rounded once to the tensors' type T.
#pragma once

#include <torch/extension.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace aios::row_ops {

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

// One sequence's G query heads (sharing KV head g) over tokens [first, n) of its paged context: scores, softmax,
// weighted values. query: [G, D] float32, pre-scaled; scores: room for G * (n - first) floats; acc: [G, D] float32
// result. DC is the head size when known at compile time (the common 64 and 128: loops the compiler unrolls into
// whole-register FMAs), else 0.
template <typename T, int64_t DC>
void attend(const float* query, int64_t G, int64_t d_runtime, const T* kc, const T* vc, int64_t Hkv, int64_t g,
            const int64_t* table, int64_t first, int64_t n, int64_t block_size, float* scores, float* acc) {
  const int64_t D = DC ? DC : d_runtime, m = n - first;
  alignas(64) float row[DC ? DC : 512];
  // block by block: the slot of token t is table[t / block_size] * block_size + t % block_size, without a division
  // per token
  for (int64_t t0 = first; t0 < n;) {
    const int64_t block = t0 / block_size, stop = std::min(n, (block + 1) * block_size);
    const int64_t base = (table[block] - block) * block_size;   // token t is in slot base + t
    for (int64_t t = t0; t < stop; ++t) {
      widen(kc + ((base + t) * Hkv + g) * D, row, D);
      for (int64_t h = 0; h < G; ++h) {
        const float* qh = query + h * D;
        float dot = 0.f;
        _Pragma("omp simd reduction(+ : dot)")
        for (int64_t i = 0; i < D; ++i) dot += qh[i] * row[i];
        scores[h * m + t - first] = dot;
      }
    }
    t0 = stop;
  }
  for (int64_t h = 0; h < G; ++h) {
    float* s = scores + h * m;
    float top = -std::numeric_limits<float>::infinity();
    for (int64_t t = 0; t < m; ++t) top = std::max(top, s[t]);
    float sum = 0.f;
    _Pragma("omp simd reduction(+ : sum)")
    for (int64_t t = 0; t < m; ++t) {
      s[t] = exp_f32(s[t] - top);
      sum += s[t];
    }
    const float norm = 1.f / sum;
    for (int64_t t = 0; t < m; ++t) s[t] *= norm;
  }
  std::fill(acc, acc + G * D, 0.f);
  for (int64_t t0 = first; t0 < n;) {
    const int64_t block = t0 / block_size, stop = std::min(n, (block + 1) * block_size);
    const int64_t base = (table[block] - block) * block_size;   // token t is in slot base + t
    for (int64_t t = t0; t < stop; ++t) {
      widen(vc + ((base + t) * Hkv + g) * D, row, D);
      for (int64_t h = 0; h < G; ++h) {
        const float p = scores[h * m + t - first];
        float* a = acc + h * D;
        _Pragma("omp simd")
        for (int64_t i = 0; i < D; ++i) a[i] += p * row[i];
      }
    }
    t0 = stop;
  }
}

// out = rms_norm(x) * w over one row of n; out may be x (every value is read before it is written).
template <typename T>
inline void rms_norm_row(const T* xr, const T* w, int64_t n, double eps, T* out) {
  float ss = 0.f;
  _Pragma("omp simd reduction(+ : ss)")
  for (int64_t i = 0; i < n; ++i) ss += f32(xr[i]) * f32(xr[i]);
  const float inv = 1.f / std::sqrt(ss / static_cast<float>(n) + static_cast<float>(eps));
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(f32(xr[i]) * inv * f32(w[i]));
}

// x += delta (when given, rounded to T), then out = rms_norm(x) * w: one row of n.
template <typename T>
inline void add_rms_norm_row(T* xr, const T* dr, const T* w, int64_t n, double eps, T* out) {
  if (dr) {
    for (int64_t i = 0; i < n; ++i) xr[i] = static_cast<T>(f32(xr[i]) + f32(dr[i]));
  }
  rms_norm_row(xr, w, n, eps, out);
}

// o = x + b over n values, rounded to T (a q/k/v bias; o may be x).
template <typename T>
inline void add_bias(const T* x, const T* b, int64_t n, T* o) {
  for (int64_t i = 0; i < n; ++i) o[i] = static_cast<T>(f32(x[i]) + f32(b[i]));
}

// Rotary (rotate-half) on one head x of D values into o: o = x cos + rotate(x) signed_sin at the row's position.
template <typename T>
inline void rope_head(const T* x, const T* c, const T* s, int64_t D, T* o) {
  const int64_t half = D / 2;
  for (int64_t i = 0; i < D; ++i) {
    const int64_t j = i < half ? i + half : i - half;
    o[i] = static_cast<T>(f32(x[i]) * f32(c[i]) + f32(x[j]) * f32(s[i]));
  }
}

// rope_head after the head's own RMSNorm (Qwen3's and Gemma 3's q/k norm, its result rounded to T first, as the
// torch path rounds it) when w is given; plain rope_head when w is null. D at most 512.
template <typename T>
inline void norm_rope_head(const T* x, const T* w, double eps, const T* c, const T* s, int64_t D, T* o) {
  if (!w) return rope_head(x, c, s, D, o);
  T normed[512];
  rms_norm_row(x, w, D, eps, normed);
  rope_head(normed, c, s, D, o);
}

// The G query heads q [G, D] (T) sharing KV head g over one sequence's context, tokens [first, n) of it (first > 0:
// a sliding window), into o [G, D]: query, acc [G * D] and scores [G * (n - first)] are the caller's float scratch.
template <typename T>
inline void attend_heads(const T* q, int64_t G, int64_t D, double scale, const T* kc, const T* vc, int64_t Hkv,
                         int64_t g, const int64_t* table, int64_t first, int64_t n, int64_t block_size, float* query,
                         float* scores, float* acc, T* o) {
  for (int64_t i = 0; i < G * D; ++i) query[i] = f32(q[i]) * static_cast<float>(scale);
  if (D == 64) {
    attend<T, 64>(query, G, D, kc, vc, Hkv, g, table, first, n, block_size, scores, acc);
  } else if (D == 128) {
    attend<T, 128>(query, G, D, kc, vc, Hkv, g, table, first, n, block_size, scores, acc);
  } else {
    attend<T, 0>(query, G, D, kc, vc, Hkv, g, table, first, n, block_size, scores, acc);
  }
  for (int64_t i = 0; i < G * D; ++i) o[i] = static_cast<T>(acc[i]);
}

// The first token a query at context length n attends to: the last `window` tokens (window > 0), else all.
inline int64_t window_start(int64_t n, int64_t window) { return window > 0 ? std::max<int64_t>(0, n - window) : 0; }

// silu(gate) * up over n values of one row, into o; g and u are float scratch of n.
template <typename T>
inline void silu_mul_row(const T* gate, const T* up, int64_t n, float* g, float* u, T* o) {
  widen(gate, g, n);
  widen(up, u, n);
  _Pragma("omp simd")
  for (int64_t i = 0; i < n; ++i) g[i] = g[i] / (1.f + exp_f32(-g[i])) * u[i];
  for (int64_t i = 0; i < n; ++i) o[i] = static_cast<T>(g[i]);
}

// gelu_tanh(gate) * up over n values of one row (Gemma's GeGLU), into o; g and u are float scratch of n. gelu_tanh(x)
// = x (1 + tanh(y)) / 2 = x sigmoid(2y), y = sqrt(2 / pi) (x + 0.044715 x^3): the sigmoid form has no cancellation.
template <typename T>
inline void gelu_mul_row(const T* gate, const T* up, int64_t n, float* g, float* u, T* o) {
  widen(gate, g, n);
  widen(up, u, n);
  const float k = 0.7978845608028654f;   // sqrt(2 / pi)
  _Pragma("omp simd")
  for (int64_t i = 0; i < n; ++i) {
    const float x = g[i], y2 = 2.f * k * (x + 0.044715f * x * x * x);
    g[i] = x / (1.f + exp_f32(-y2)) * u[i];
  }
  for (int64_t i = 0; i < n; ++i) o[i] = static_cast<T>(g[i]);
}

}  // namespace aios::row_ops

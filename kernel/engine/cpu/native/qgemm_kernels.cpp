// The block-quantized dot products of qgemm.h, one weight row against 1-4 activation rows, per instruction set:
//   scalar  plain C++, not vectorized: the reference the others are tested against
//   avx2    _mm256_maddubs_epi16 (unsigned x signed bytes, pairs summed to int16) then _mm256_madd_epi16 to int32:
//           4-bit codes are unsigned already; Q8_0 takes |w| and x with w's sign (the sign trick), since a biased
//           unsigned Q8_0 code (up to 255) times 127, two per int16, would saturate
//   avx512  _mm512_dpbusd_epi32 (VNNI: four u8 x s8 products summed straight into int32, no saturation), 64 codes,
//           two blocks, per instruction; Q8_0 codes biased to unsigned by xor 0x80, corrected by -128 d s per block
// The ISA functions are compiled for their own instruction sets by target attributes, not by the build's -march:
// qgemm.cpp picks one at run time, so one build runs (and tests) each path the CPU has. (The build's -march=native,
// which the other sources need, is a floor the attributes cannot lower: on an AVX-512 machine the compiler may
// encode the AVX2 path's 256-bit instructions with EVEX; the instructions, and so the results, are the AVX2 ones.) Each row's sum runs in a fixed order, so a row's result never depends on the other rows in the call.
#include "qgemm.h"
#include "qgemm_simd.h"

#include <immintrin.h>

#include <cstring>

namespace aios::blocks {

namespace {

// ---- scalar --------------------------------------------------------------------------------------------------------

inline int code(Format f, const uint8_t* row, int64_t b, int64_t j) {
  if (f == Format::Q8_0) return reinterpret_cast<const int8_t*>(row)[b * kBlock + j];
  const uint8_t byte = row[(b / 2) * kBlock + j];
  return (b % 2 == 0) ? (byte & 0x0f) : (byte >> 4);
}

// Not vectorized: it is the reference, and GCC 12 at -O3 -march=native turned its Q8_0 loop into vpdpbusd with the
// weights read as unsigned bytes (wrong results, found by the tests).
template <Format F>
__attribute__((optimize("no-tree-vectorize"))) void row_scalar(const Weights& w, int64_t n, const Acts& a, int64_t t0, int64_t rows, float* out) {
  const uint8_t* wr = w.codes + n * w.row_bytes;
  const uint16_t* dw = w.d + n * w.gp;
  for (int64_t r = 0; r < rows; ++r) {
    const int8_t* xq = a.q + (t0 + r) * a.gp * kBlock;
    const float* xd = a.d + (t0 + r) * a.gp;
    const float* xs = a.s + (t0 + r) * a.gp;
    float acc = 0.f;
    for (int64_t b = 0; b < w.gp; ++b) {
      int32_t dot = 0;
      for (int64_t j = 0; j < kBlock; ++j) dot += code(F, wr, b, j) * xq[b * kBlock + j];
      const float d = half_to_float(dw[b]);
      acc += d * xd[b] * static_cast<float>(dot);
      if (F == Format::Q4_0) acc += -8.f * d * xs[b];
      if (F == Format::Q4_1) acc += half_to_float(w.m[n * w.gp + b]) * xs[b];
    }
    out[r] = acc;
  }
}

// ---- AVX2 ----------------------------------------------------------------------------------------------------------

AVX2_TARGET inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// sum_b k * plane[b] * s[b] for one activation row: the blocks' constant terms
AVX2_TARGET inline float constant_terms_avx2(const uint16_t* plane, const float* s, int64_t gp, float k) {
  __m256 acc = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 8 <= gp; b += 8) {
    const __m256 c = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(plane + b)));
    acc = _mm256_fmadd_ps(c, _mm256_loadu_ps(s + b), acc);
  }
  float tail = 0.f;
  for (; b < gp; ++b) tail += _cvtsh_ss(plane[b]) * s[b];
  return k * (hsum256(acc) + tail);
}

// R rows a compile-time count: the accumulators stay in registers (qgemm_raw_kernels.cpp)
template <Format F, int R>
AVX2_TARGET void row_avx2_rows(const Weights& w, int64_t n, const Acts& a, int64_t t0, float* out) {
  constexpr int64_t rows = R;
  const uint8_t* wr = w.codes + n * w.row_bytes;
  const uint16_t* dw = w.d + n * w.gp;
  const __m256i ones = _mm256_set1_epi16(1), low4 = _mm256_set1_epi8(0x0f);
  const int64_t kp = a.gp * kBlock;
  __m256 acc[kMaxRows] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  if constexpr (F == Format::Q8_0) {
    for (int64_t b = 0; b < w.gp; ++b) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + b * kBlock));
      const __m256i aq = _mm256_sign_epi8(q, q);
      const float d = _cvtsh_ss(dw[b]);
      for (int64_t r = 0; r < rows; ++r) {
        const int8_t* xq = a.q + (t0 + r) * kp + b * kBlock;
        const __m256i x = _mm256_sign_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq)), q);
        const __m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(aq, x), ones);
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(d * a.d[(t0 + r) * a.gp + b]), acc[r]);
      }
    }
  } else {
    for (int64_t p = 0; p < w.gp / 2; ++p) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + p * kBlock));
      const __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
      const float d0 = _cvtsh_ss(dw[2 * p]), d1 = _cvtsh_ss(dw[2 * p + 1]);
      for (int64_t r = 0; r < rows; ++r) {
        const int8_t* xq = a.q + (t0 + r) * kp + p * 2 * kBlock;
        const float* xd = a.d + (t0 + r) * a.gp + 2 * p;
        const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq));
        const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + kBlock));
        const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, x0), ones);
        const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, x1), ones);
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_set1_ps(d0 * xd[0]), acc[r]);
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_set1_ps(d1 * xd[1]), acc[r]);
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    float y = hsum256(acc[r]);
    const float* xs = a.s + (t0 + r) * a.gp;
    if (F == Format::Q4_0) y += constant_terms_avx2(dw, xs, w.gp, -8.f);
    if (F == Format::Q4_1) y += constant_terms_avx2(w.m + n * w.gp, xs, w.gp, 1.f);
    out[r] = y;
  }
}

template <Format F>
void row_avx2(const Weights& w, int64_t n, const Acts& a, int64_t t0, int64_t rows, float* out) {
  with_row_count(rows, [&](auto r) { row_avx2_rows<F, decltype(r)::value>(w, n, a, t0, out); });
}

// ---- AVX-512 VNNI --------------------------------------------------------------------------------------------------

AVX512_TARGET inline float constant_terms_avx512(const uint16_t* plane, const float* s, int64_t gp, float k) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t b = 0; b < gp; b += 16) {
    const __mmask16 mask = gp - b >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (gp - b)) - 1);
    const __m512 c = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, plane + b));
    acc = _mm512_fmadd_ps(c, _mm512_maskz_loadu_ps(mask, s + b), acc);
  }
  return k * _mm512_reduce_add_ps(acc);
}

// R rows a compile-time count: the accumulators stay in registers (qgemm_raw_kernels.cpp)
template <Format F, int R>
AVX512_TARGET void row_avx512_rows(const Weights& w, int64_t n, const Acts& a, int64_t t0, float* out) {
  constexpr int64_t rows = R;
  const uint8_t* wr = w.codes + n * w.row_bytes;
  const uint16_t* dw = w.d + n * w.gp;
  const int64_t kp = a.gp * kBlock;
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i pair = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);   // lanes 0-7 block 0
  __m512 acc[kMaxRows] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  for (int64_t p = 0; p < w.gp / 2; ++p) {
    __m512i q;
    if constexpr (F == Format::Q8_0) {
      q = _mm512_xor_si512(_mm512_loadu_si512(wr + p * 2 * kBlock), bias);
    } else {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + p * kBlock));
      const __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
      q = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    }
    uint32_t two;
    std::memcpy(&two, dw + 2 * p, sizeof two);
    const __m512 d = _mm512_permutexvar_ps(pair, _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(two))));
    for (int64_t r = 0; r < rows; ++r) {
      const __m512i x = _mm512_loadu_si512(a.q + (t0 + r) * kp + p * 2 * kBlock);
      const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, x);
      const __m512 scale = _mm512_mul_ps(d, _mm512_loadu_ps(a.d8 + (t0 + r) * a.gp * 8 + p * 16));
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[r]);
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    float y = _mm512_reduce_add_ps(acc[r]);
    const float* xs = a.s + (t0 + r) * a.gp;
    if (F == Format::Q8_0) y += constant_terms_avx512(dw, xs, w.gp, -128.f);
    if (F == Format::Q4_0) y += constant_terms_avx512(dw, xs, w.gp, -8.f);
    if (F == Format::Q4_1) y += constant_terms_avx512(w.m + n * w.gp, xs, w.gp, 1.f);
    out[r] = y;
  }
}

template <Format F>
void row_avx512(const Weights& w, int64_t n, const Acts& a, int64_t t0, int64_t rows, float* out) {
  with_row_count(rows, [&](auto r) { row_avx512_rows<F, decltype(r)::value>(w, n, a, t0, out); });
}

}  // namespace

RowKernel scalar_kernel(Format f) {
  switch (f) {
    case Format::Q8_0: return row_scalar<Format::Q8_0>;
    case Format::Q4_0: return row_scalar<Format::Q4_0>;
    case Format::Q4_1: return row_scalar<Format::Q4_1>;
    default: return nullptr;  // the raw formats: qgemm_raw_kernels.cpp
  }
}

RowKernel avx2_kernel(Format f) {
  switch (f) {
    case Format::Q8_0: return row_avx2<Format::Q8_0>;
    case Format::Q4_0: return row_avx2<Format::Q4_0>;
    case Format::Q4_1: return row_avx2<Format::Q4_1>;
    default: return nullptr;
  }
}

RowKernel avx512_kernel(Format f) {
  switch (f) {
    case Format::Q8_0: return row_avx512<Format::Q8_0>;
    case Format::Q4_0: return row_avx512<Format::Q4_0>;
    case Format::Q4_1: return row_avx512<Format::Q4_1>;
    default: return nullptr;
  }
}

}  // namespace aios::blocks

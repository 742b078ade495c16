// The group kernels (qgemm.h): 16 grouped Q4_0 / Q4_1 weight rows, in a vector's lanes, against 1-8 activation rows.
//   scalar  plain C++, not vectorized: the reference (std::fma, the order the SIMD lanes run)
//   avx2    8 rows per 256-bit vector, the group's two halves one after the other (the second reads the pair's 512
//           bytes from L1): _mm256_maddubs_epi16 (unsigned 4-bit codes x int8 activations, two products per int16)
//           summed in int16 over a block's eight fours (at most 8 x 2 x 15 x 127 = 30480: no overflow), then
//           _mm256_madd_epi16 with ones to int32
//   avx512  16 rows per 512-bit vector: _mm512_dpbusd_epi32 (VNNI), the activation's four codes broadcast
// One 64-byte load holds a pair of blocks' fours for 16 rows (low nibbles block 2p, high 2p + 1), so the nibbles are
// split once per pair for all the call's activation rows. Compiled for each ISA by target attributes (qgemm_simd.h).
#include "qgemm.h"
#include "qgemm_simd.h"

#include <immintrin.h>

#include <cmath>
#include <cstring>

namespace aios::blocks {
namespace {

constexpr int64_t kPairBytes = 8 * kGroupRows * 4;   // a pair of blocks' codes of a group: 512

inline int32_t four(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// What a group reads: its codes, and per block its 16 rows' d (and m) as fp16.
struct GroupView {
  const uint8_t* codes;
  const uint16_t* d;
  const uint16_t* m;
};

inline GroupView group_view(const Weights& w, int64_t g) {
  const int64_t scales = g * kGroupRows * w.gp;
  return {w.codes + g * kGroupRows * w.row_bytes, w.d + scales, w.m != nullptr ? w.m + scales : nullptr};
}

// The activations' per-block integer term: bias * sum(x_b) (Q4_0's codes mean q - 8)
template <Format F>
inline int32_t bias_term(const Acts& a, int64_t t, int64_t b) {
  if constexpr (F == Format::Q4_0) return 8 * (a.h16[(t * a.gp + b) * 2] + a.h16[(t * a.gp + b) * 2 + 1]);
  return 0;
}

// ---- scalar --------------------------------------------------------------------------------------------------------

template <Format F>
__attribute__((optimize("no-tree-vectorize"))) void group_scalar(const Weights& w, int64_t g, const Acts& a,
                                                                  int64_t t0, int64_t rows, float* out) {
  const GroupView v = group_view(w, g);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = t0 + r;
    const int8_t* xq = a.q + t * a.gp * kBlock;
    for (int64_t i = 0; i < kGroupRows; ++i) {
      float acc = 0.f;
      for (int64_t b = 0; b < w.gp; ++b) {
        const uint8_t* pair = v.codes + (b / 2) * kPairBytes + i * 4;
        const int shift = (b % 2) * 4;
        int32_t dot = 0;
        for (int64_t j = 0; j < 8; ++j) {
          for (int64_t c = 0; c < 4; ++c) {
            dot += ((pair[j * kGroupRows * 4 + c] >> shift) & 0x0f) * xq[b * kBlock + 4 * j + c];
          }
        }
        const float d = half_to_float(v.d[b * kGroupRows + i]) * a.d[t * a.gp + b];
        acc = std::fma(static_cast<float>(dot - bias_term<F>(a, t, b)), d, acc);
        if constexpr (F == Format::Q4_1) acc = std::fma(half_to_float(v.m[b * kGroupRows + i]), a.s[t * a.gp + b], acc);
      }
      out[r * kGroupRows + i] = acc;
    }
  }
}

// ---- AVX2 ----------------------------------------------------------------------------------------------------------

// Rows `half` * 8 .. + 8 of the group against R activation rows (R <= 4: 2R int16 sums, the nibbles and activations
// in 16 registers).
template <Format F, int R>
AVX2_TARGET void group_half_avx2(const Weights& w, const GroupView& v, int half, const Acts& a, int64_t t0,
                                 float* out) {
  const __m256i low4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  const int64_t kp = a.gp * kBlock;
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t p = 0; p < w.gp / 2; ++p) {
    const uint8_t* codes = v.codes + p * kPairBytes + half * 32;
    __m256i sum[R][2];
    for (int r = 0; r < R; ++r) sum[r][0] = sum[r][1] = _mm256_setzero_si256();
    for (int64_t j = 0; j < 8; ++j) {
      const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + j * 64));
      const __m256i lo = _mm256_and_si256(c, low4), hi = _mm256_and_si256(_mm256_srli_epi16(c, 4), low4);
      for (int r = 0; r < R; ++r) {
        const int8_t* xq = a.q + (t0 + r) * kp + p * 2 * kBlock + 4 * j;
        sum[r][0] = _mm256_add_epi16(sum[r][0], _mm256_maddubs_epi16(lo, _mm256_set1_epi32(four(xq))));
        sum[r][1] = _mm256_add_epi16(sum[r][1], _mm256_maddubs_epi16(hi, _mm256_set1_epi32(four(xq + kBlock))));
      }
    }
    for (int h = 0; h < 2; ++h) {
      const int64_t b = 2 * p + h;
      const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v.d + b * kGroupRows + half * 8)));
      __m256 m = _mm256_setzero_ps();
      if constexpr (F == Format::Q4_1) {
        m = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v.m + b * kGroupRows + half * 8)));
      }
      for (int r = 0; r < R; ++r) {
        const int64_t t = t0 + r;
        const __m256i dot = _mm256_sub_epi32(_mm256_madd_epi16(sum[r][h], ones), _mm256_set1_epi32(bias_term<F>(a, t, b)));
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(d, _mm256_set1_ps(a.d[t * a.gp + b])), acc[r]);
        if constexpr (F == Format::Q4_1) acc[r] = _mm256_fmadd_ps(m, _mm256_set1_ps(a.s[t * a.gp + b]), acc[r]);
      }
    }
  }
  for (int r = 0; r < R; ++r) _mm256_storeu_ps(out + r * kGroupRows + half * 8, acc[r]);
}

template <Format F>
void group_avx2(const Weights& w, int64_t g, const Acts& a, int64_t t0, int64_t rows, float* out) {
  const GroupView v = group_view(w, g);
  for (int64_t r0 = 0; r0 < rows; r0 += kMaxRows) {   // four rows at a time: the registers AVX2 has
    with_row_count(std::min(kMaxRows, rows - r0), [&](auto r) {
      for (int half = 0; half < 2; ++half) {
        group_half_avx2<F, decltype(r)::value>(w, v, half, a, t0 + r0, out + r0 * kGroupRows);
      }
    });
  }
}

// ---- AVX-512 VNNI --------------------------------------------------------------------------------------------------

template <Format F, int R>
AVX512_TARGET void group_avx512_rows(const Weights& w, int64_t g, const Acts& a, int64_t t0, float* out) {
  const GroupView v = group_view(w, g);
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  const int64_t kp = a.gp * kBlock;
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t p = 0; p < w.gp / 2; ++p) {
    const uint8_t* codes = v.codes + p * kPairBytes;
    __m512i dot[R][2];
    for (int r = 0; r < R; ++r) dot[r][0] = dot[r][1] = _mm512_setzero_si512();
    for (int64_t j = 0; j < 8; ++j) {
      const __m512i c = _mm512_loadu_si512(codes + j * 64);
      const __m512i lo = _mm512_and_si512(c, low4), hi = _mm512_and_si512(_mm512_srli_epi16(c, 4), low4);
      for (int r = 0; r < R; ++r) {
        const int8_t* xq = a.q + (t0 + r) * kp + p * 2 * kBlock + 4 * j;
        dot[r][0] = _mm512_dpbusd_epi32(dot[r][0], lo, _mm512_set1_epi32(four(xq)));
        dot[r][1] = _mm512_dpbusd_epi32(dot[r][1], hi, _mm512_set1_epi32(four(xq + kBlock)));
      }
    }
    for (int h = 0; h < 2; ++h) {
      const int64_t b = 2 * p + h;
      const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v.d + b * kGroupRows)));
      __m512 m = _mm512_setzero_ps();
      if constexpr (F == Format::Q4_1) {
        m = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v.m + b * kGroupRows)));
      }
      for (int r = 0; r < R; ++r) {
        const int64_t t = t0 + r;
        const __m512i dt = _mm512_sub_epi32(dot[r][h], _mm512_set1_epi32(bias_term<F>(a, t, b)));
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dt), _mm512_mul_ps(d, _mm512_set1_ps(a.d[t * a.gp + b])), acc[r]);
        if constexpr (F == Format::Q4_1) acc[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(a.s[t * a.gp + b]), acc[r]);
      }
    }
  }
  for (int r = 0; r < R; ++r) _mm512_storeu_ps(out + r * kGroupRows, acc[r]);
}

template <Format F>
void group_avx512(const Weights& w, int64_t g, const Acts& a, int64_t t0, int64_t rows, float* out) {
  static_assert(kGroupMaxRows == 8, "a case per row count");
  switch (rows) {   // 8 rows: 8 accumulators and 16 integer dots, in AVX-512's 32 registers
    case 8: return group_avx512_rows<F, 8>(w, g, a, t0, out);
    case 7: return group_avx512_rows<F, 7>(w, g, a, t0, out);
    case 6: return group_avx512_rows<F, 6>(w, g, a, t0, out);
    case 5: return group_avx512_rows<F, 5>(w, g, a, t0, out);
    case 4: return group_avx512_rows<F, 4>(w, g, a, t0, out);
    case 3: return group_avx512_rows<F, 3>(w, g, a, t0, out);
    case 2: return group_avx512_rows<F, 2>(w, g, a, t0, out);
    default: return group_avx512_rows<F, 1>(w, g, a, t0, out);
  }
}

}  // namespace

GroupKernel scalar_group_kernel(Format f) {
  switch (f) {
    case Format::Q4_0: return group_scalar<Format::Q4_0>;
    case Format::Q4_1: return group_scalar<Format::Q4_1>;
    default: return nullptr;
  }
}

GroupKernel avx2_group_kernel(Format f) {
  switch (f) {
    case Format::Q4_0: return group_avx2<Format::Q4_0>;
    case Format::Q4_1: return group_avx2<Format::Q4_1>;
    default: return nullptr;
  }
}

GroupKernel avx512_group_kernel(Format f) {
  switch (f) {
    case Format::Q4_0: return group_avx512<Format::Q4_0>;
    case Format::Q4_1: return group_avx512<Format::Q4_1>;
    default: return nullptr;
  }
}

}  // namespace aios::blocks

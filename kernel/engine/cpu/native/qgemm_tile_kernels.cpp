// The tile kernels of the blocked product (qgemm.h, Tile): kTileN decoded weight rows times 1-6 activation rows.
// A vector's lanes are weight rows, so an activation row's four codes are broadcast to every lane, the products of a
// block accumulate in int32 per lane with no horizontal sums, and one float multiply-add per block covers 16 (8)
// rows. Per (weight row, activation row) every ISA computes
//     sum_b  d_b dx_b (dot(code_b, x_b) - bias * sum(x_b))  +  m_b s_b      (Q6_K: the first term per 16-input half)
// with the integer part exact:
//   scalar  plain C++, not vectorized: the reference
//   avx2    8 rows per 256-bit vector: _mm256_maddubs_epi16 (unsigned codes x signed activations) then madd to int32;
//           Q8_0's codes (up to 255) would saturate maddubs, so they are made signed again and multiplied with the
//           sign trick (|w| times x with w's sign), the dot then needing no bias correction
//   avx512  16 rows per 512-bit vector: _mm512_dpbusd_epi32 (VNNI), four products per lane per instruction
// The ISA functions are compiled for their own instruction sets by target attributes (as in qgemm_kernels.cpp), and
// each row's sum runs in a fixed order, whatever the other rows of the call.
#include "qgemm.h"
#include "qgemm_simd.h"

#include <immintrin.h>

#include <cstring>

namespace aios::blocks {
namespace {

constexpr int64_t kTileBlockBytes = 8 * kTileN * 4;  // one 32-block of a tile's codes

inline int32_t four_codes(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

struct RowView {  // one activation row's arrays
  const int8_t* q;
  const float* d;
  const float* s;
  const int32_t* h;
};

inline RowView row_view(const Acts& a, int64_t t) {
  return {a.q + t * a.gp * kBlock, a.d + t * a.gp, a.s + t * a.gp, a.h16 + t * a.gp * 2};
}

// ---- scalar --------------------------------------------------------------------------------------------------------

__attribute__((optimize("no-tree-vectorize"))) void tile_scalar(const Tile& t, const Acts& a, int64_t t0,
                                                                 int64_t rows, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const RowView x = row_view(a, t0 + r);
    for (int64_t i = 0; i < kTileN; ++i) {
      float acc = 0.f;
      for (int64_t b = 0; b < t.g; ++b) {
        const uint8_t* q = t.q + b * kTileBlockBytes + i * 4;
        int32_t dot[2] = {0, 0};
        for (int64_t k4 = 0; k4 < 8; ++k4) {
          for (int64_t j = 0; j < 4; ++j) dot[k4 / 4] += q[k4 * kTileN * 4 + j] * x.q[b * kBlock + 4 * k4 + j];
        }
        const int32_t i0 = dot[0] - t.bias * x.h[2 * b], i1 = dot[1] - t.bias * x.h[2 * b + 1];
        const float* d = t.d + b * 2 * kTileN + i;
        if (t.split) {
          acc += static_cast<float>(i0) * (d[0] * x.d[b]);
          acc += static_cast<float>(i1) * (d[kTileN] * x.d[b]);
        } else {
          acc += static_cast<float>(i0 + i1) * (d[0] * x.d[b]);
        }
        if (t.has_m) acc += t.m[b * kTileN + i] * x.s[b];
      }
      out[r * kTileN + i] = acc;
    }
  }
}

// ---- AVX2 ----------------------------------------------------------------------------------------------------------

template <int R, bool SPLIT, bool HAS_M, bool WIDE>
AVX2_TARGET void tile_avx2_rows(const Tile& t, const Acts& a, int64_t t0, float* out) {
  RowView x[R];
  for (int r = 0; r < R; ++r) x[r] = row_view(a, t0 + r);
  const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8(static_cast<char>(0x80));
  const int32_t bias = WIDE ? 0 : t.bias;   // WIDE: the dot is of the signed codes already
  for (int half = 0; half < 2; ++half) {     // tile rows 0-7, then 8-15
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < t.g; ++b) {
      const uint8_t* q = t.q + b * kTileBlockBytes + half * 32;
      __m256i dot[2][R];
      for (int r = 0; r < R; ++r) dot[0][r] = dot[1][r] = _mm256_setzero_si256();
      for (int k4 = 0; k4 < 8; ++k4) {
        __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + k4 * kTileN * 4));
        __m256i aw = w;
        if constexpr (WIDE) {
          w = _mm256_xor_si256(w, flip);
          aw = _mm256_sign_epi8(w, w);
        }
        const int h = SPLIT ? k4 / 4 : 0;
        for (int r = 0; r < R; ++r) {
          __m256i xb = _mm256_set1_epi32(four_codes(x[r].q + b * kBlock + 4 * k4));
          if constexpr (WIDE) xb = _mm256_sign_epi8(xb, w);
          dot[h][r] = _mm256_add_epi32(dot[h][r], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xb), ones));
        }
      }
      const __m256 d0 = _mm256_loadu_ps(t.d + b * 2 * kTileN + half * 8);
      for (int r = 0; r < R; ++r) {
        const __m256 dx = _mm256_set1_ps(x[r].d[b]);
        if constexpr (SPLIT) {
          const __m256 d1 = _mm256_loadu_ps(t.d + (b * 2 + 1) * kTileN + half * 8);
          const __m256i c0 = _mm256_sub_epi32(dot[0][r], _mm256_set1_epi32(bias * x[r].h[2 * b]));
          const __m256i c1 = _mm256_sub_epi32(dot[1][r], _mm256_set1_epi32(bias * x[r].h[2 * b + 1]));
          acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c0), _mm256_mul_ps(d0, dx), acc[r]);
          acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c1), _mm256_mul_ps(d1, dx), acc[r]);
        } else {
          const __m256i c = _mm256_sub_epi32(dot[0][r], _mm256_set1_epi32(bias * (x[r].h[2 * b] + x[r].h[2 * b + 1])));
          acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c), _mm256_mul_ps(d0, dx), acc[r]);
        }
        if constexpr (HAS_M) {
          acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(t.m + b * kTileN + half * 8), _mm256_set1_ps(x[r].s[b]), acc[r]);
        }
      }
    }
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(out + r * kTileN + half * 8, acc[r]);
  }
}

template <bool SPLIT, bool HAS_M, bool WIDE>
void tile_avx2(const Tile& t, const Acts& a, int64_t t0, int64_t rows, float* out) {
  for (; rows >= 2; rows -= 2, t0 += 2, out += 2 * kTileN) tile_avx2_rows<2, SPLIT, HAS_M, WIDE>(t, a, t0, out);
  if (rows == 1) tile_avx2_rows<1, SPLIT, HAS_M, WIDE>(t, a, t0, out);
}

void tile_avx2_any(const Tile& t, const Acts& a, int64_t t0, int64_t rows, float* out) {
  if (t.split) return tile_avx2<true, false, false>(t, a, t0, rows, out);
  if (t.has_m) return tile_avx2<false, true, false>(t, a, t0, rows, out);
  return tile_avx2<false, false, false>(t, a, t0, rows, out);
}

void tile_avx2_wide(const Tile& t, const Acts& a, int64_t t0, int64_t rows, float* out) {
  tile_avx2<false, false, true>(t, a, t0, rows, out);
}

// ---- AVX-512 VNNI --------------------------------------------------------------------------------------------------

template <int R, bool SPLIT, bool HAS_M>
AVX512_TARGET void tile_avx512_rows(const Tile& t, const Acts& a, int64_t t0, float* out) {
  RowView x[R];
  for (int r = 0; r < R; ++r) x[r] = row_view(a, t0 + r);
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t b = 0; b < t.g; ++b) {
    const uint8_t* q = t.q + b * kTileBlockBytes;
    __m512i dot[2][R];
    for (int r = 0; r < R; ++r) dot[0][r] = dot[1][r] = _mm512_setzero_si512();
    for (int k4 = 0; k4 < 8; ++k4) {
      const __m512i w = _mm512_loadu_si512(q + k4 * kTileN * 4);
      const int h = SPLIT ? k4 / 4 : 0;
      for (int r = 0; r < R; ++r) {
        dot[h][r] = _mm512_dpbusd_epi32(dot[h][r], w, _mm512_set1_epi32(four_codes(x[r].q + b * kBlock + 4 * k4)));
      }
    }
    const __m512 d0 = _mm512_loadu_ps(t.d + b * 2 * kTileN);
    for (int r = 0; r < R; ++r) {
      const __m512 dx = _mm512_set1_ps(x[r].d[b]);
      if constexpr (SPLIT) {
        const __m512 d1 = _mm512_loadu_ps(t.d + (b * 2 + 1) * kTileN);
        const __m512i c0 = _mm512_sub_epi32(dot[0][r], _mm512_set1_epi32(t.bias * x[r].h[2 * b]));
        const __m512i c1 = _mm512_sub_epi32(dot[1][r], _mm512_set1_epi32(t.bias * x[r].h[2 * b + 1]));
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c0), _mm512_mul_ps(d0, dx), acc[r]);
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c1), _mm512_mul_ps(d1, dx), acc[r]);
      } else {
        const __m512i c = _mm512_sub_epi32(dot[0][r], _mm512_set1_epi32(t.bias * (x[r].h[2 * b] + x[r].h[2 * b + 1])));
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c), _mm512_mul_ps(d0, dx), acc[r]);
      }
      if constexpr (HAS_M) {
        acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(t.m + b * kTileN), _mm512_set1_ps(x[r].s[b]), acc[r]);
      }
    }
  }
  for (int r = 0; r < R; ++r) _mm512_storeu_ps(out + r * kTileN, acc[r]);
}

template <bool SPLIT, bool HAS_M>
void tile_avx512(const Tile& t, const Acts& a, int64_t t0, int64_t rows, float* out) {
  static_assert(kTileRows == 6, "a case per row count");
  switch (rows) {
    case 6: return tile_avx512_rows<6, SPLIT, HAS_M>(t, a, t0, out);
    case 5: return tile_avx512_rows<5, SPLIT, HAS_M>(t, a, t0, out);
    case 4: return tile_avx512_rows<4, SPLIT, HAS_M>(t, a, t0, out);
    case 3: return tile_avx512_rows<3, SPLIT, HAS_M>(t, a, t0, out);
    case 2: return tile_avx512_rows<2, SPLIT, HAS_M>(t, a, t0, out);
    default: return tile_avx512_rows<1, SPLIT, HAS_M>(t, a, t0, out);
  }
}

void tile_avx512_any(const Tile& t, const Acts& a, int64_t t0, int64_t rows, float* out) {
  if (t.split) return tile_avx512<true, false>(t, a, t0, rows, out);
  if (t.has_m) return tile_avx512<false, true>(t, a, t0, rows, out);
  return tile_avx512<false, false>(t, a, t0, rows, out);
}

}  // namespace

TileKernel scalar_tile_kernel() { return tile_scalar; }
TileKernel avx2_tile_kernel(bool wide) { return wide ? tile_avx2_wide : tile_avx2_any; }
TileKernel avx512_tile_kernel() { return tile_avx512_any; }

}  // namespace aios::blocks

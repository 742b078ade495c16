// The group kernels (qgemm.h): 16 grouped Q4_0 / Q4_1 / Q8_0 weight rows, in a vector's lanes, against 1-8 activation
// rows.
//   scalar  plain C++, not vectorized: the reference (std::fma, the order the SIMD lanes run)
//   avx2    8 rows per 256-bit vector, the group's two halves in one pass for one activation row, else one after
//           the other (the second reads the unit's 512 bytes from L1): _mm256_maddubs_epi16 (unsigned codes x int8
//           activations, two products per int16); the 4-bit codes' int16 sums run over a block's eight fours (at most
//           8 x 2 x 15 x 127 = 30480: no overflow) before _mm256_madd_epi16 with ones widens them to int32; Q8_0
//           multiplies |w| by x with w's sign (a signed code cannot go into maddubs' unsigned operand) and widens each
//           four's pair sums at once
//   avx512  16 rows per 512-bit vector: _mm512_dpbusd_epi32 (VNNI), the activation's four codes broadcast; Q8_0's codes
//           biased to unsigned by xor 0x80, the dot corrected by 128 sum(x) (the same integer)
// One 64-byte load holds a unit's fours for 16 rows (4-bit: low nibbles block 2p, high 2p + 1; Q8_0: one block), so
// the codes are unpacked once per unit for all the call's activation rows. Compiled for each ISA by target attributes
// (qgemm_simd.h).
#include "qgemm.h"
#include "qgemm_simd.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace aios::blocks {
namespace {

constexpr int64_t kUnitBytes = 8 * kGroupRows * 4;   // a group's codes of a pair of 4-bit blocks, or of a Q8_0 block

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

// bias * sum(x_b): what the dot of unsigned codes that mean code - bias must give back
inline int32_t bias_term(int32_t bias, const Acts& a, int64_t t, int64_t b) {
  return bias * (a.h16[(t * a.gp + b) * 2] + a.h16[(t * a.gp + b) * 2 + 1]);
}

// The bias of the codes the scalar and AVX2 kernels multiply (AVX-512's Q8_0 adds its own 128)
template <Format F>
constexpr int32_t code_bias() {
  return F == Format::Q4_0 ? 8 : 0;
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
        int32_t dot = 0;
        for (int64_t j = 0; j < 8; ++j) {
          for (int64_t c = 0; c < 4; ++c) {
            const int32_t x = xq[b * kBlock + 4 * j + c];
            if constexpr (F == Format::Q8_0) {
              dot += static_cast<int8_t>(v.codes[b * kUnitBytes + (j * kGroupRows + i) * 4 + c]) * x;
            } else {
              const uint8_t byte = v.codes[(b / 2) * kUnitBytes + (j * kGroupRows + i) * 4 + c];
              dot += ((byte >> (b % 2) * 4) & 0x0f) * x;
            }
          }
        }
        const float d = half_to_float(v.d[b * kGroupRows + i]) * a.d[t * a.gp + b];
        acc = std::fma(static_cast<float>(dot - bias_term(code_bias<F>(), a, t, b)), d, acc);
        if constexpr (F == Format::Q4_1) acc = std::fma(half_to_float(v.m[b * kGroupRows + i]), a.s[t * a.gp + b], acc);
      }
      out[r * kGroupRows + i] = acc;
    }
  }
}

// ---- AVX2 ----------------------------------------------------------------------------------------------------------

// Blocks per 512-byte unit of a group's codes
template <Format F>
constexpr int kUnitBlocks = F == Format::Q8_0 ? 1 : 2;

// Rows half0 * 8 .. (half0 + H) * 8 of the group against R activation rows: both halves in one pass (H = 2) when
// one activation row leaves the registers for it, so each activation's four codes are broadcast once for 16 rows;
// else one half at a time (R <= 4: the sums, the codes and activations in AVX2's 16 registers).
template <Format F, int R, int H>
AVX2_TARGET void group_rows_avx2(const Weights& w, const GroupView& v, int half0, const Acts& a, int64_t t0,
                                 float* out) {
  constexpr int U = kUnitBlocks<F>;
  const __m256i low4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  const int64_t kp = a.gp * kBlock;
  __m256 acc[R][H];
  for (int r = 0; r < R; ++r) {
    for (int hh = 0; hh < H; ++hh) acc[r][hh] = _mm256_setzero_ps();
  }
  for (int64_t u = 0; u < w.gp / U; ++u) {
    const uint8_t* codes = v.codes + u * kUnitBytes + half0 * 32;
    __m256i sum[R][U][H];   // int16 pair sums (4-bit codes) or int32 dots (Q8_0)
    for (int r = 0; r < R; ++r) {
      for (int h = 0; h < U; ++h) {
        for (int hh = 0; hh < H; ++hh) sum[r][h][hh] = _mm256_setzero_si256();
      }
    }
    for (int64_t j = 0; j < 8; ++j) {
      __m256i c[H];
      for (int hh = 0; hh < H; ++hh) {
        c[hh] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + j * 64 + hh * 32));
      }
      if constexpr (F == Format::Q8_0) {
        for (int r = 0; r < R; ++r) {
          const __m256i x = _mm256_set1_epi32(four(a.q + (t0 + r) * kp + u * kBlock + 4 * j));
          for (int hh = 0; hh < H; ++hh) {
            const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(c[hh], c[hh]), _mm256_sign_epi8(x, c[hh]));
            sum[r][0][hh] = _mm256_add_epi32(sum[r][0][hh], _mm256_madd_epi16(pairs, ones));
          }
        }
      } else {
        __m256i lo[H], hi[H];
        for (int hh = 0; hh < H; ++hh) {
          lo[hh] = _mm256_and_si256(c[hh], low4);
          hi[hh] = _mm256_and_si256(_mm256_srli_epi16(c[hh], 4), low4);
        }
        for (int r = 0; r < R; ++r) {
          const int8_t* xq = a.q + (t0 + r) * kp + u * 2 * kBlock + 4 * j;
          const __m256i xa = _mm256_set1_epi32(four(xq)), xb = _mm256_set1_epi32(four(xq + kBlock));
          for (int hh = 0; hh < H; ++hh) {
            sum[r][0][hh] = _mm256_add_epi16(sum[r][0][hh], _mm256_maddubs_epi16(lo[hh], xa));
            sum[r][1][hh] = _mm256_add_epi16(sum[r][1][hh], _mm256_maddubs_epi16(hi[hh], xb));
          }
        }
      }
    }
    for (int h = 0; h < U; ++h) {
      const int64_t b = U * u + h;
      for (int hh = 0; hh < H; ++hh) {
        const int64_t lane0 = b * kGroupRows + (half0 + hh) * 8;
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v.d + lane0)));
        __m256 m = _mm256_setzero_ps();
        if constexpr (F == Format::Q4_1) {
          m = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v.m + lane0)));
        }
        for (int r = 0; r < R; ++r) {
          const int64_t t = t0 + r;
          const __m256i wide = F == Format::Q8_0 ? sum[r][h][hh] : _mm256_madd_epi16(sum[r][h][hh], ones);
          const __m256i dot = _mm256_sub_epi32(wide, _mm256_set1_epi32(bias_term(code_bias<F>(), a, t, b)));
          acc[r][hh] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(d, _mm256_set1_ps(a.d[t * a.gp + b])),
                                       acc[r][hh]);
          if constexpr (F == Format::Q4_1) {
            acc[r][hh] = _mm256_fmadd_ps(m, _mm256_set1_ps(a.s[t * a.gp + b]), acc[r][hh]);
          }
        }
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int hh = 0; hh < H; ++hh) _mm256_storeu_ps(out + r * kGroupRows + (half0 + hh) * 8, acc[r][hh]);
  }
}

template <Format F>
void group_avx2(const Weights& w, int64_t g, const Acts& a, int64_t t0, int64_t rows, float* out) {
  const GroupView v = group_view(w, g);
  if (rows == 1) return group_rows_avx2<F, 1, 2>(w, v, 0, a, t0, out);
  for (int64_t r0 = 0; r0 < rows; r0 += kMaxRows) {   // four rows at a time: the registers AVX2 has
    with_row_count(std::min(kMaxRows, rows - r0), [&](auto r) {
      for (int half = 0; half < 2; ++half) {
        group_rows_avx2<F, decltype(r)::value, 1>(w, v, half, a, t0 + r0, out + r0 * kGroupRows);
      }
    });
  }
}

// ---- AVX-512 VNNI --------------------------------------------------------------------------------------------------

template <Format F, int R>
AVX512_TARGET void group_avx512_rows(const Weights& w, int64_t g, const Acts& a, int64_t t0, float* out) {
  constexpr int U = kUnitBlocks<F>;
  constexpr int32_t bias = F == Format::Q8_0 ? 128 : code_bias<F>();
  const GroupView v = group_view(w, g);
  const __m512i low4 = _mm512_set1_epi8(0x0f), flip = _mm512_set1_epi8(static_cast<char>(0x80));
  const int64_t kp = a.gp * kBlock;
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t u = 0; u < w.gp / U; ++u) {
    const uint8_t* codes = v.codes + u * kUnitBytes;
    __m512i dot[R][U];
    for (int r = 0; r < R; ++r) {
      for (int h = 0; h < U; ++h) dot[r][h] = _mm512_setzero_si512();
    }
    for (int64_t j = 0; j < 8; ++j) {
      const __m512i c = _mm512_loadu_si512(codes + j * 64);
      if constexpr (F == Format::Q8_0) {
        const __m512i biased = _mm512_xor_si512(c, flip);
        for (int r = 0; r < R; ++r) {
          const int8_t* xq = a.q + (t0 + r) * kp + u * kBlock + 4 * j;
          dot[r][0] = _mm512_dpbusd_epi32(dot[r][0], biased, _mm512_set1_epi32(four(xq)));
        }
      } else {
        const __m512i lo = _mm512_and_si512(c, low4), hi = _mm512_and_si512(_mm512_srli_epi16(c, 4), low4);
        for (int r = 0; r < R; ++r) {
          const int8_t* xq = a.q + (t0 + r) * kp + u * 2 * kBlock + 4 * j;
          dot[r][0] = _mm512_dpbusd_epi32(dot[r][0], lo, _mm512_set1_epi32(four(xq)));
          dot[r][1] = _mm512_dpbusd_epi32(dot[r][1], hi, _mm512_set1_epi32(four(xq + kBlock)));
        }
      }
    }
    for (int h = 0; h < U; ++h) {
      const int64_t b = U * u + h;
      const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v.d + b * kGroupRows)));
      __m512 m = _mm512_setzero_ps();
      if constexpr (F == Format::Q4_1) {
        m = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v.m + b * kGroupRows)));
      }
      for (int r = 0; r < R; ++r) {
        const int64_t t = t0 + r;
        const __m512i dt = _mm512_sub_epi32(dot[r][h], _mm512_set1_epi32(bias_term(bias, a, t, b)));
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
    case Format::Q8_0: return group_scalar<Format::Q8_0>;
    default: return nullptr;
  }
}

GroupKernel avx2_group_kernel(Format f) {
  switch (f) {
    case Format::Q4_0: return group_avx2<Format::Q4_0>;
    case Format::Q4_1: return group_avx2<Format::Q4_1>;
    case Format::Q8_0: return group_avx2<Format::Q8_0>;
    default: return nullptr;
  }
}

GroupKernel avx512_group_kernel(Format f) {
  switch (f) {
    case Format::Q4_0: return group_avx512<Format::Q4_0>;
    case Format::Q4_1: return group_avx512<Format::Q4_1>;
    case Format::Q8_0: return group_avx512<Format::Q8_0>;
    default: return nullptr;
  }
}

}  // namespace aios::blocks

// Decode-row kernels of Q5_K and Q5_1 (qgemm_q5.h): one weight row, read straight from the file's blocks, against
// 1-4 activation rows (qgemm.h, RowKernel). The 5-bit codes are unpacked in registers (nibbles by mask and shift, the
// fifth bits from their bit planes) and multiplied as unsigned bytes by the int8 activations; each block's constant
// term is applied after the sums, on the activations' block sums s_b = dx sum(x_b):
//   Q5_1  w = d q + m:         sum_b d dx dot(q, x)  + sum_b m s_b
//   Q5_K  w = d sc q - dmin m: sum_b (d sc) dx dot(q, x) + sum_b (-dmin m) s_b
//   avx2    _mm256_maddubs_epi16 + _mm256_madd_epi16, one 32-block per 256-bit vector (codes <= 31: no saturation)
//   avx512  _mm512_dpbusd_epi32 (VNNI), two 32-blocks per 512-bit vector, lanes 0-7 the first
// As qgemm_raw_kernels.cpp does for Q5_0 and Q4_K, whose loops these follow; compiled for their instruction sets by
// target attributes, each row's sum in a fixed order (the scalar reference is qgemm_tile.cpp's, from qgemm_q5.h).
#include "qgemm.h"
#include "qgemm_simd.h"
#include "qgemm_q5.h"

#include <immintrin.h>

#include <cstring>

namespace aios::blocks {
namespace {

using simd::dot_avx2;
using simd::fifth_bits_avx2;
using simd::hsum256;
using simd::pair_dot_avx512;

// The super-block's eight 6-bit scales and mins (bytes 4-15, Q4_K's packing) as bytes: sc 0-7 then m 0-7, moved
// with whole-word masks and shifts (no per-field branches).
inline void k_fields(const uint8_t* p, uint8_t* bytes) {
  uint32_t u[3], v[4];
  std::memcpy(u, p + 4, sizeof u);
  v[0] = u[0] & 0x3f3f3f3fu;                                                        // sc 0-3
  v[1] = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);                  // sc 4-7
  v[2] = u[1] & 0x3f3f3f3fu;                                                        // m 0-3
  v[3] = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);           // m 4-7
  std::memcpy(bytes, v, sizeof v);
}

// ---- AVX2 ----------------------------------------------------------------------------------------------------------

template <Format F, int R>
AVX2_TARGET void q5_avx2_rows(const Weights& w, int64_t n, const Acts& a, int64_t t0, float* out) {
  const uint8_t* wr = w.codes + n * w.row_bytes;
  const int64_t kp = a.gp * kBlock;
  const __m256i low4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(0x01);
  __m256 acc[R], con[R];
  for (int r = 0; r < R; ++r) acc[r] = con[r] = _mm256_setzero_ps();
  if constexpr (F == Format::Q5_1) {
    const int64_t g = w.row_bytes / kQ5_1Bytes;
    float con_s[R] = {};
    for (int64_t b = 0; b < g; ++b) {
      const uint8_t* p = wr + b * kQ5_1Bytes;
      uint32_t qh;
      std::memcpy(&qh, p + 4, sizeof qh);
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8));
      const __m256i nib = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), low4);
      const __m256i q = _mm256_or_si256(nib, fifth_bits_avx2(qh));
      uint32_t both;   // d and m converted by one instruction
      std::memcpy(&both, p, sizeof both);
      const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(both)));
      const float d = _mm_cvtss_f32(dm), m = _mm_cvtss_f32(_mm_movehdup_ps(dm));
      for (int r = 0; r < R; ++r) {
        const int64_t t = t0 + r;
        const __m256i dot = dot_avx2(q, a.q + t * kp + b * kBlock);
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(d * a.d[t * a.gp + b]), acc[r]);
        con_s[r] += m * a.s[t * a.gp + b];
      }
    }
    for (int r = 0; r < R; ++r) out[r] = hsum256(acc[r]) + con_s[r];
  } else {  // Q5_K
    const int64_t supers = w.row_bytes / kQ5KBytes;
    alignas(32) float dsc[8], mins[8];
    for (int64_t sb = 0; sb < supers; ++sb) {
      const uint8_t* p = wr + sb * kQ5KBytes;
      uint8_t fields[16];
      k_fields(p, fields);
      const float d = q5_fp16(p), dmin = q5_fp16(p + 2);
      for (int j = 0; j < 8; ++j) {
        dsc[j] = d * static_cast<float>(fields[j]);
        mins[j] = -(dmin * static_cast<float>(fields[8 + j]));
      }
      // the fifth-bit plane, shifted down one bit per 32-block: bit 0 of each byte is then the current block's
      // (16-bit shifts carry the high byte's bits into the low byte's top, never into its bit 0 within 8 shifts)
      __m256i hb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16));
      for (int64_t j = 0; j < 4; ++j) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 48 + 32 * j));
        const __m256i lo = _mm256_or_si256(_mm256_and_si256(v, low4), _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
        hb = _mm256_srli_epi16(hb, 1);
        const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), low4),
                                           _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
        hb = _mm256_srli_epi16(hb, 1);
        const int64_t b = sb * 8 + 2 * j;
        for (int r = 0; r < R; ++r) {
          const int64_t t = t0 + r;
          const float* dx = a.d + t * a.gp + b;
          acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_avx2(lo, a.q + t * kp + b * kBlock)),
                                   _mm256_set1_ps(dsc[2 * j] * dx[0]), acc[r]);
          acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_avx2(hi, a.q + t * kp + (b + 1) * kBlock)),
                                   _mm256_set1_ps(dsc[2 * j + 1] * dx[1]), acc[r]);
        }
      }
      const __m256 mv = _mm256_load_ps(mins);
      for (int r = 0; r < R; ++r) {
        con[r] = _mm256_fmadd_ps(mv, _mm256_loadu_ps(a.s + (t0 + r) * a.gp + sb * 8), con[r]);
      }
    }
    for (int r = 0; r < R; ++r) out[r] = hsum256(acc[r]) + hsum256(con[r]);
  }
}

template <Format F>
void q5_avx2(const Weights& w, int64_t n, const Acts& a, int64_t t0, int64_t rows, float* out) {
  with_row_count(rows, [&](auto r) { q5_avx2_rows<F, decltype(r)::value>(w, n, a, t0, out); });
}

// ---- AVX-512 VNNI --------------------------------------------------------------------------------------------------

// Two fp16 values at p and p + stride as [first, second, 0, 0]
AVX512_TARGET inline __m128 two_halves(const uint8_t* p, int64_t stride) {
  uint16_t h[2];
  std::memcpy(h, p, 2);
  std::memcpy(h + 1, p + stride, 2);
  uint32_t both;
  std::memcpy(&both, h, sizeof both);
  return _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(both)));
}

template <Format F, int R>
AVX512_TARGET void q5_avx512_rows(const Weights& w, int64_t n, const Acts& a, int64_t t0, float* out) {
  const uint8_t* wr = w.codes + n * w.row_bytes;
  const int64_t kp = a.gp * kBlock;
  const __m512i fifth = _mm512_set1_epi8(0x10), low4x = _mm512_set1_epi8(0x0f);
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  auto pair_dot = [&](__m512i q, int64_t t, int64_t b, __m512 scale, __m512 sum) {
    return pair_dot_avx512(q, a.q + t * kp + b * kBlock, a.d8 + (t * a.gp + b) * 8, scale, sum);
  };
  if constexpr (F == Format::Q5_1) {
    // Two blocks (48 bytes) per step: both blocks' nibbles unpacked by one shift and mask and put in block order by
    // one permute, their fifth bits one 64-bit byte mask, their scales and constants one conversion each.
    const int64_t g = w.row_bytes / kQ5_1Bytes;
    const __m512i order = _mm512_set_epi64(7, 6, 3, 2, 5, 4, 1, 0);   // [v0 lo, v0 hi, v1 lo, v1 hi]
    const __m512i pair_lanes = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    __m128 con4[R];
    for (int r = 0; r < R; ++r) con4[r] = _mm_setzero_ps();
    int64_t b = 0;
    for (; b + 2 <= g; b += 2) {
      const uint8_t* p = wr + b * kQ5_1Bytes;
      uint32_t qh0, qh1;
      std::memcpy(&qh0, p + 4, sizeof qh0);
      std::memcpy(&qh1, p + kQ5_1Bytes + 4, sizeof qh1);
      const __m256i v = _mm256_inserti128_si256(
          _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8))),
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + kQ5_1Bytes + 8)), 1);
      const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1);
      const __m512i nib = _mm512_and_si512(_mm512_permutexvar_epi64(order, both), low4x);
      const __m512i q = _mm512_or_si512(nib, _mm512_maskz_mov_epi8(qh0 | (static_cast<uint64_t>(qh1) << 32), fifth));
      const __m128 dd = two_halves(p, kQ5_1Bytes), mm = two_halves(p + 2, kQ5_1Bytes);
      const __m512 scale = _mm512_permutexvar_ps(pair_lanes, _mm512_castps128_ps512(dd));
      for (int r = 0; r < R; ++r) {
        const int64_t t = t0 + r;
        acc[r] = pair_dot(q, t, b, scale, acc[r]);
        const __m128 s = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(a.s + t * a.gp + b)));
        con4[r] = _mm_fmadd_ps(mm, s, con4[r]);
      }
    }
    float con_s[R];
    for (int r = 0; r < R; ++r) con_s[r] = _mm_cvtss_f32(_mm_hadd_ps(con4[r], con4[r]));   // m0 s0 + m1 s1
    if (b < g) {  // an odd count's last block, beside a zero one (the activations' padding block is zero too)
      const uint8_t* p = wr + b * kQ5_1Bytes;
      uint32_t qh;
      std::memcpy(&qh, p + 4, sizeof qh);
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8));
      const __m256i nib = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0f));
      const __m256i q = _mm256_or_si256(nib, _mm256_maskz_mov_epi8(qh, _mm256_set1_epi8(0x10)));
      const __m512i qz = _mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_setzero_si256(), 1);
      const float d0 = q5_fp16(p), m0 = q5_fp16(p + 2);
      const __m512 scale = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(d0)), _mm256_setzero_ps(), 1);
      for (int r = 0; r < R; ++r) {
        const int64_t t = t0 + r;
        acc[r] = pair_dot(qz, t, b, scale, acc[r]);
        con_s[r] += m0 * a.s[t * a.gp + b];
      }
    }
    for (int r = 0; r < R; ++r) out[r] = _mm512_reduce_add_ps(acc[r]) + con_s[r];
  } else {  // Q5_K
    // As Q4_K: the super-block's 16 6-bit fields become 16 floats in one vector (lanes 0-7 d sc_j, 8-15 -dmin m_j);
    // the fifth bits of a pair of blocks are one 64-bit mask tested from the bit plane loaded twice.
    const int64_t supers = w.row_bytes / kQ5KBytes;
    const __m512i pick[4] = {_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
                             _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2),
                             _mm512_set_epi32(5, 5, 5, 5, 5, 5, 5, 5, 4, 4, 4, 4, 4, 4, 4, 4),
                             _mm512_set_epi32(7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 6, 6, 6, 6, 6)};
    auto bit_pair = [](int j) {   // lanes 0-31: bit 2j, 32-63: bit 2j + 1
      return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi8(static_cast<char>(1 << (2 * j)))),
                                _mm256_set1_epi8(static_cast<char>(1 << (2 * j + 1))), 1);
    };
    const __m512i bits[4] = {bit_pair(0), bit_pair(1), bit_pair(2), bit_pair(3)};
    __m512 con[R];
    for (int r = 0; r < R; ++r) con[r] = _mm512_setzero_ps();
    for (int64_t sb = 0; sb < supers; ++sb) {
      const uint8_t* p = wr + sb * kQ5KBytes;
      uint8_t fields[16];
      k_fields(p, fields);
      const __m512 dm = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(q5_fp16(p))),
                                           _mm256_set1_ps(-q5_fp16(p + 2)), 1);
      const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(fields));
      const __m512 all = _mm512_mul_ps(dm, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(packed)));
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16));
      const __m512i hh = _mm512_inserti64x4(_mm512_castsi256_si512(h), h, 1);
      for (int64_t j = 0; j < 4; ++j) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 48 + 32 * j));
        const __m512i nib =
            _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1), low4x);
        const __m512i q = _mm512_or_si512(nib, _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(hh, bits[j]), fifth));
        const __m512 scale = _mm512_permutexvar_ps(pick[j], all);
        for (int r = 0; r < R; ++r) acc[r] = pair_dot(q, t0 + r, sb * 8 + 2 * j, scale, acc[r]);
      }
      const __m512 mv = _mm512_shuffle_f32x4(all, all, 0xee);   // lanes 0-7: -dmin m_j
      for (int r = 0; r < R; ++r) {
        con[r] = _mm512_fmadd_ps(mv, _mm512_zextps256_ps512(_mm256_loadu_ps(a.s + (t0 + r) * a.gp + sb * 8)), con[r]);
      }
    }
    for (int r = 0; r < R; ++r) out[r] = _mm512_reduce_add_ps(acc[r]) + _mm512_reduce_add_ps(con[r]);
  }
}

template <Format F>
void q5_avx512(const Weights& w, int64_t n, const Acts& a, int64_t t0, int64_t rows, float* out) {
  with_row_count(rows, [&](auto r) { q5_avx512_rows<F, decltype(r)::value>(w, n, a, t0, out); });
}

}  // namespace

RowKernel avx2_q5_kernel(Format f) {
  switch (f) {
    case Format::Q5_K: return q5_avx2<Format::Q5_K>;
    case Format::Q5_1: return q5_avx2<Format::Q5_1>;
    default: return nullptr;
  }
}

RowKernel avx512_q5_kernel(Format f) {
  switch (f) {
    case Format::Q5_K: return q5_avx512<Format::Q5_K>;
    case Format::Q5_1: return q5_avx512<Format::Q5_1>;
    default: return nullptr;
  }
}

}  // namespace aios::blocks

// Decode-row kernels of the raw formats (Q5_0, Q4_K, Q6_K): one weight row, read straight from the file's blocks,
// against 1-4 activation rows (qgemm.h, RowKernel). The codes are unpacked in registers (nibbles by mask and shift,
// Q5_0's fifth bit from its 32-bit mask, Q6_K's two high bits from their shared bytes), multiplied as unsigned bytes
// by the int8 activations, and the formats' zero points applied after the sums:
//   Q5_0  w = d (q - 16):     sum_b d dx dot(q, x)  - 16 sum_b d s_b
//   Q4_K  w = d sc q - dmin m: sum_b (d sc) dx dot(q, x) + sum_b (-dmin m) s_b
//   Q6_K  w = d sc (q - 32) per 16 weights: sum_h (d sc_h) dx dot_h(q, x) - 32 sum_h (d sc_h) dx h16_h
// where s_b = dx sum(x_b) and h16 the integer sums of each 16-input half (qgemm.h, Acts).
//   avx2    _mm256_maddubs_epi16 + _mm256_madd_epi16, one 32-block per 256-bit vector (codes <= 63: no saturation)
//   avx512  _mm512_dpbusd_epi32 (VNNI), two 32-blocks per 512-bit vector, lanes 0-7 the first
// Compiled for their instruction sets by target attributes (as qgemm_kernels.cpp); each row's sum in a fixed order.
#include "qgemm.h"
#include "qgemm_simd.h"

#include <immintrin.h>

#include <cstring>

namespace aios::blocks {
namespace {

using simd::dot_avx2;
using simd::fifth_bits_avx2;
using simd::hsum256;
using simd::pair_dot_avx512;

inline float fp16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return half_to_float(h);
}

// Q4_K's super-block scales: d sc_j and -(dmin m_j) for its eight 32-blocks. The 6-bit fields are moved into eight
// scale bytes and eight min bytes with whole-word masks and shifts (no per-field branches), as llama.cpp does.
inline void q4k_scales(const uint8_t* p, float* dsc, float* mins) {
  uint32_t u[3], v[4];
  std::memcpy(u, p + 4, sizeof u);
  v[0] = u[0] & 0x3f3f3f3fu;                                                       // sc 0-3
  v[1] = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);                 // sc 4-7
  v[2] = u[1] & 0x3f3f3f3fu;                                                       // m 0-3
  v[3] = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);          // m 4-7
  uint8_t bytes[16];
  std::memcpy(bytes, v, sizeof bytes);
  const float d = fp16_at(p), dmin = fp16_at(p + 2);
  for (int j = 0; j < 8; ++j) {
    dsc[j] = d * static_cast<float>(bytes[j]);
    mins[j] = -(dmin * static_cast<float>(bytes[8 + j]));
  }
}

// ---- AVX2 ----------------------------------------------------------------------------------------------------------

AVX2_TARGET inline __m256i nibbles16_avx2(const uint8_t* p) {  // 16 bytes → weights 0-15 low, 16-31 high
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i low4 = _mm_set1_epi8(0x0f);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), low4), _mm_and_si128(v, low4));
}

// R activation rows, a compile-time count: the accumulators stay in registers and the row loops unroll (with a
// run-time count they lived on the stack, a store and a load per block in every row's dependency chain).
template <Format F, int R>
AVX2_TARGET void raw_avx2_rows(const Weights& w, int64_t n, const Acts& a, int64_t t0, float* out) {
  constexpr int64_t rows = R;
  const uint8_t* wr = w.codes + n * w.row_bytes;
  const int64_t kp = a.gp * kBlock;
  const __m256i low4 = _mm256_set1_epi8(0x0f), two = _mm256_set1_epi8(0x30);
  __m256 acc[kMaxRows], con[kMaxRows];
  for (int r = 0; r < kMaxRows; ++r) acc[r] = con[r] = _mm256_setzero_ps();
  if constexpr (F == Format::Q5_0) {
    const int64_t g = w.row_bytes / 22;
    float con_s[R] = {};
    for (int64_t b = 0; b < g; ++b) {
      const uint8_t* p = wr + b * 22;
      uint32_t qh;
      std::memcpy(&qh, p + 2, sizeof qh);
      const __m256i q = _mm256_or_si256(nibbles16_avx2(p + 6), fifth_bits_avx2(qh));
      const float d = fp16_at(p);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t t = t0 + r;
        const __m256i dot = dot_avx2(q, a.q + t * kp + b * kBlock);
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(d * a.d[t * a.gp + b]), acc[r]);
        con_s[r] += d * a.s[t * a.gp + b];
      }
    }
    for (int64_t r = 0; r < rows; ++r) out[r] = hsum256(acc[r]) - 16.f * con_s[r];
    return;
  } else if constexpr (F == Format::Q4_K) {
    const int64_t supers = w.row_bytes / 144;
    alignas(32) float dsc[8], mins[8];
    for (int64_t sb = 0; sb < supers; ++sb) {
      const uint8_t* p = wr + sb * 144;
      q4k_scales(p, dsc, mins);
      for (int64_t j = 0; j < 4; ++j) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16 + 32 * j));
        const __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
        const int64_t b = sb * 8 + 2 * j;
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t t = t0 + r;
          const float* dx = a.d + t * a.gp + b;
          acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_avx2(lo, a.q + t * kp + b * kBlock)),
                                   _mm256_set1_ps(dsc[2 * j] * dx[0]), acc[r]);
          acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_avx2(hi, a.q + t * kp + (b + 1) * kBlock)),
                                   _mm256_set1_ps(dsc[2 * j + 1] * dx[1]), acc[r]);
        }
      }
      const __m256 mv = _mm256_load_ps(mins);
      for (int64_t r = 0; r < rows; ++r) {
        con[r] = _mm256_fmadd_ps(mv, _mm256_loadu_ps(a.s + (t0 + r) * a.gp + sb * 8), con[r]);
      }
    }
    for (int64_t r = 0; r < rows; ++r) out[r] = hsum256(acc[r]) + hsum256(con[r]);
    return;
  } else {  // Q6_K
    const int64_t supers = w.row_bytes / 210;
    alignas(32) float dsc[16];
    for (int64_t sb = 0; sb < supers; ++sb) {
      const uint8_t* p = wr + sb * 210;
      const float d = fp16_at(p + 208);
      const int8_t* sc = reinterpret_cast<const int8_t*>(p + 192);
      for (int j = 0; j < 16; ++j) dsc[j] = d * static_cast<float>(sc[j]);
      for (int64_t h = 0; h < 2; ++h) {
        const uint8_t* ql = p + 64 * h;
        const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
        const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 128 + 32 * h));
        const __m256i q[4] = {
            _mm256_or_si256(_mm256_and_si256(l0, low4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), two)),
            _mm256_or_si256(_mm256_and_si256(l1, low4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), two)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4), _mm256_and_si256(qh, two)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4),
                            _mm256_and_si256(_mm256_srli_epi16(qh, 2), two)),
        };
        for (int64_t quarter = 0; quarter < 4; ++quarter) {
          const int64_t sub = 4 * h + quarter, b = sb * 8 + sub;
          const __m256 scale = _mm256_set_m128(_mm_set1_ps(dsc[2 * sub + 1]), _mm_set1_ps(dsc[2 * sub]));
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t t = t0 + r;
            const __m256 dx = _mm256_set1_ps(a.d[t * a.gp + b]);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_avx2(q[quarter], a.q + t * kp + b * kBlock)),
                                     _mm256_mul_ps(scale, dx), acc[r]);
          }
        }
      }
      for (int64_t r = 0; r < rows; ++r) {  // the zero point: 32 (d sc_h) dx h16_h over the 16 halves
        const int64_t t = t0 + r;
        const int32_t* h16 = a.h16 + t * a.gp * 2 + sb * 16;
        const float* dx = a.d + t * a.gp + sb * 8;
        for (int half = 0; half < 2; ++half) {
          const __m256 hs = _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h16 + 8 * half)));
          const __m256 dxs = _mm256_setr_ps(dx[4 * half], dx[4 * half], dx[4 * half + 1], dx[4 * half + 1],
                                            dx[4 * half + 2], dx[4 * half + 2], dx[4 * half + 3], dx[4 * half + 3]);
          con[r] = _mm256_fmadd_ps(_mm256_load_ps(dsc + 8 * half), _mm256_mul_ps(hs, dxs), con[r]);
        }
      }
    }
    for (int64_t r = 0; r < rows; ++r) out[r] = hsum256(acc[r]) - 32.f * hsum256(con[r]);
  }
}

template <Format F>
void raw_avx2(const Weights& w, int64_t n, const Acts& a, int64_t t0, int64_t rows, float* out) {
  with_row_count(rows, [&](auto r) { raw_avx2_rows<F, decltype(r)::value>(w, n, a, t0, out); });
}

// ---- AVX-512 VNNI --------------------------------------------------------------------------------------------------

AVX512_TARGET inline __m512 pair_scale(float first, float second) {  // lanes 0-7 first, 8-15 second
  return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(first)), _mm256_set1_ps(second), 1);
}

// R activation rows, a compile-time count: the accumulators stay in registers and the row loops unroll (with a
// run-time count they lived on the stack, a store and a load per block in every row's dependency chain).
template <Format F, int R>
AVX512_TARGET void raw_avx512_rows(const Weights& w, int64_t n, const Acts& a, int64_t t0, float* out) {
  constexpr int64_t rows = R;
  const uint8_t* wr = w.codes + n * w.row_bytes;
  const int64_t kp = a.gp * kBlock;
  const __m256i low4 = _mm256_set1_epi8(0x0f), two = _mm256_set1_epi8(0x30);
  __m512 acc[kMaxRows], con[kMaxRows];
  for (int r = 0; r < kMaxRows; ++r) acc[r] = con[r] = _mm512_setzero_ps();
  auto pair_dot = [&](__m512i q, int64_t t, int64_t b, __m512 scale, __m512 sum) {
    return pair_dot_avx512(q, a.q + t * kp + b * kBlock, a.d8 + (t * a.gp + b) * 8, scale, sum);
  };
  if constexpr (F == Format::Q5_0) {
    // Two blocks (44 bytes) per step with no scalar work per code: the nibbles of both unpacked by one shift and
    // mask and put in block order by one permute, both blocks' fifth bits one 64-bit byte mask.
    const int64_t g = w.row_bytes / 22;
    const __m512i fifth = _mm512_set1_epi8(0x10), low4x = _mm512_set1_epi8(0x0f);
    const __m512i order = _mm512_set_epi64(7, 6, 3, 2, 5, 4, 1, 0);   // [v0 lo, v0 hi, v1 lo, v1 hi]
    const __m512i pair_lanes = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    float con_s[R] = {};
    __m128 con4[R];
    for (int r = 0; r < R; ++r) con4[r] = _mm_setzero_ps();
    int64_t b = 0;
    for (; b + 2 <= g; b += 2) {
      const uint8_t* p = wr + b * 22;
      uint32_t qh0, qh1;
      std::memcpy(&qh0, p + 2, sizeof qh0);
      std::memcpy(&qh1, p + 24, sizeof qh1);
      const __m256i v = _mm256_inserti128_si256(
          _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 6))),
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 28)), 1);
      const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1);
      const __m512i nib = _mm512_and_si512(_mm512_permutexvar_epi64(order, both), low4x);
      const __m512i q = _mm512_or_si512(nib, _mm512_maskz_mov_epi8(qh0 | (static_cast<uint64_t>(qh1) << 32), fifth));
      // both scales converted by one instruction and spread to the pair's lanes by one permute, the zero-point
      // terms d_b s_b of both blocks one multiply-add on [d0, d1] x [s0, s1] (1.3-1.5x the GB/s of two scalar
      // conversions, a pair_scale and scalar sums)
      uint16_t h[2];
      std::memcpy(h, p, 2);
      std::memcpy(h + 1, p + 22, 2);
      uint32_t two;
      std::memcpy(&two, h, sizeof two);
      const __m128 dd = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(two)));   // [d0, d1, 0, 0]
      const __m512 scale = _mm512_permutexvar_ps(pair_lanes, _mm512_castps128_ps512(dd));
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t t = t0 + r;
        acc[r] = pair_dot(q, t, b, scale, acc[r]);
        const __m128 s = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(a.s + t * a.gp + b)));
        con4[r] = _mm_fmadd_ps(dd, s, con4[r]);
      }
    }
    for (int64_t r = 0; r < rows; ++r) con_s[r] = _mm_cvtss_f32(_mm_hadd_ps(con4[r], con4[r]));   // d0 s0 + d1 s1
    if (b < g) {  // an odd count's last block, beside a zero one (the activations' padding block is zero too)
      const uint8_t* p = wr + b * 22;
      uint32_t qh;
      std::memcpy(&qh, p + 2, sizeof qh);
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 6));
      const __m256i nib = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), low4);
      const __m512i q = _mm512_castsi256_si512(_mm256_or_si256(nib, _mm256_maskz_mov_epi8(qh, _mm256_set1_epi8(0x10))));
      const __m512i qz = _mm512_inserti64x4(q, _mm256_setzero_si256(), 1);
      const float d0 = fp16_at(p);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t t = t0 + r;
        acc[r] = pair_dot(qz, t, b, pair_scale(d0, 0.f), acc[r]);
        con_s[r] += d0 * a.s[t * a.gp + b];
      }
    }
    for (int64_t r = 0; r < rows; ++r) out[r] = _mm512_reduce_add_ps(acc[r]) - 16.f * con_s[r];
  } else if constexpr (F == Format::Q4_K) {
    // The super-block's 16 6-bit fields become 16 floats in one vector (lanes 0-7 d sc_j, 8-15 -dmin m_j): the
    // fields moved into bytes with whole-word masks and shifts, widened, converted and scaled by [d x8, -dmin x8].
    const int64_t supers = w.row_bytes / 144;
    const __m512i pick[4] = {_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
                             _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2),
                             _mm512_set_epi32(5, 5, 5, 5, 5, 5, 5, 5, 4, 4, 4, 4, 4, 4, 4, 4),
                             _mm512_set_epi32(7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 6, 6, 6, 6, 6)};
    for (int64_t sb = 0; sb < supers; ++sb) {
      const uint8_t* p = wr + sb * 144;
      uint32_t u[3];
      std::memcpy(u, p + 4, sizeof u);
      const __m128i fields = _mm_setr_epi32(
          static_cast<int>(u[0] & 0x3f3f3f3fu),                                                       // sc 0-3
          static_cast<int>((u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4)),                // sc 4-7
          static_cast<int>(u[1] & 0x3f3f3f3fu),                                                       // m 0-3
          static_cast<int>(((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4)));        // m 4-7
      const __m512 dm = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(fp16_at(p))),
                                           _mm256_set1_ps(-fp16_at(p + 2)), 1);
      const __m512 all = _mm512_mul_ps(dm, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(fields)));
      for (int64_t j = 0; j < 4; ++j) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16 + 32 * j));
        const __m512i q = _mm512_and_si512(
            _mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1), _mm512_set1_epi8(0x0f));
        const __m512 scale = _mm512_permutexvar_ps(pick[j], all);
        for (int64_t r = 0; r < rows; ++r) acc[r] = pair_dot(q, t0 + r, sb * 8 + 2 * j, scale, acc[r]);
      }
      const __m512 mv = _mm512_shuffle_f32x4(all, all, 0xee);   // lanes 0-7: -dmin m_j
      for (int64_t r = 0; r < rows; ++r) {
        con[r] = _mm512_fmadd_ps(mv, _mm512_zextps256_ps512(_mm256_loadu_ps(a.s + (t0 + r) * a.gp + sb * 8)), con[r]);
      }
    }
    for (int64_t r = 0; r < rows; ++r) out[r] = _mm512_reduce_add_ps(acc[r]) + _mm512_reduce_add_ps(con[r]);
  } else {  // Q6_K
    const int64_t supers = w.row_bytes / 210;
    const __m512i quad = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);   // lane → 16-half
    const __m512i twice = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);  // half → block
    for (int64_t sb = 0; sb < supers; ++sb) {
      const uint8_t* p = wr + sb * 210;
      const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 192));
      const __m512 dsc = _mm512_mul_ps(_mm512_set1_ps(fp16_at(p + 208)), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc)));
      for (int64_t h = 0; h < 2; ++h) {
        const uint8_t* ql = p + 64 * h;
        const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
        const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 128 + 32 * h));
        const __m256i q0 = _mm256_or_si256(_mm256_and_si256(l0, low4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), two));
        const __m256i q1 = _mm256_or_si256(_mm256_and_si256(l1, low4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), two));
        const __m256i q2 =
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4), _mm256_and_si256(qh, two));
        const __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4),
                                           _mm256_and_si256(_mm256_srli_epi16(qh, 2), two));
        const __m512i pairs[2] = {_mm512_inserti64x4(_mm512_castsi256_si512(q0), q1, 1),
                                  _mm512_inserti64x4(_mm512_castsi256_si512(q2), q3, 1)};
        for (int64_t pi = 0; pi < 2; ++pi) {
          const int64_t first_half = 8 * h + 4 * pi;  // the 16-halves of this pair of blocks
          const __m512 scale = _mm512_permutexvar_ps(_mm512_add_epi32(quad, _mm512_set1_epi32(first_half)), dsc);
          for (int64_t r = 0; r < rows; ++r) acc[r] = pair_dot(pairs[pi], t0 + r, sb * 8 + 4 * h + 2 * pi, scale, acc[r]);
        }
      }
      for (int64_t r = 0; r < rows; ++r) {  // the zero point: 32 (d sc_h) dx h16_h over the 16 halves
        const int64_t t = t0 + r;
        const __m512 hs = _mm512_cvtepi32_ps(_mm512_loadu_si512(a.h16 + t * a.gp * 2 + sb * 16));
        const __m512 dx = _mm512_permutexvar_ps(twice, _mm512_castps256_ps512(_mm256_loadu_ps(a.d + t * a.gp + sb * 8)));
        con[r] = _mm512_fmadd_ps(dsc, _mm512_mul_ps(hs, dx), con[r]);
      }
    }
    for (int64_t r = 0; r < rows; ++r) out[r] = _mm512_reduce_add_ps(acc[r]) - 32.f * _mm512_reduce_add_ps(con[r]);
  }
}

template <Format F>
void raw_avx512(const Weights& w, int64_t n, const Acts& a, int64_t t0, int64_t rows, float* out) {
  with_row_count(rows, [&](auto r) { raw_avx512_rows<F, decltype(r)::value>(w, n, a, t0, out); });
}

}  // namespace

RowKernel avx2_raw_kernel(Format f) {
  switch (f) {
    case Format::Q5_0: return raw_avx2<Format::Q5_0>;
    case Format::Q4_K: return raw_avx2<Format::Q4_K>;
    case Format::Q6_K: return raw_avx2<Format::Q6_K>;
    case Format::Q5_K:
    case Format::Q5_1: return avx2_q5_kernel(f);
    default: return nullptr;
  }
}

RowKernel avx512_raw_kernel(Format f) {
  switch (f) {
    case Format::Q5_0: return raw_avx512<Format::Q5_0>;
    case Format::Q4_K: return raw_avx512<Format::Q4_K>;
    case Format::Q6_K: return raw_avx512<Format::Q6_K>;
    case Format::Q5_K:
    case Format::Q5_1: return avx512_q5_kernel(f);
    default: return nullptr;
  }
}

}  // namespace aios::blocks

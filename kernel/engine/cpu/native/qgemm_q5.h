// GGUF's Q5_K and Q5_1 blocks as the file stores them (qgemm.h, the raw formats), decoded one 32-block at a time
// into unsigned 5-bit codes, their scale and their constant term, for the tile decoder (qgemm_tile.cpp) and the
// scalar reference row kernel; the SIMD row kernels (qgemm_q5_kernels.cpp) read the same bytes in registers.
//   Q5_1  24 bytes per 32 weights: fp16 d, fp16 m, uint32 qh (bit j: weight j's fifth bit), 16 bytes of nibbles
//         (byte j: weight j low, weight j + 16 high);                            w = d q + m
//   Q5_K  176 bytes per 256: fp16 d, fp16 dmin, 12 bytes of 6-bit scales and mins (Q4_K's packing), 32 bytes qh
//         (bit j of byte l: the fifth bit of weight l of 32-block j), 128 bytes of nibbles (bytes 32c .. 32c + 31
//         hold 32-block 2c in their low nibbles and 2c + 1 in their high ones);   w = d sc_j q - dmin m_j
// Both have a per-block constant term (m, -dmin m_j) and no zero point in the codes (bias 0): a product sums
// d dx dot(q, x) + c s per block, s = dx sum(x) (qgemm.h, Acts). gguf.quants' dequantizer is the reference layout.
#pragma once

#include "qgemm.h"

#include <cstring>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace aios::blocks {

constexpr int64_t kQ5KBytes = 176;   // per super-block of 256
constexpr int64_t kQ5_1Bytes = 24;   // per block of 32

inline float q5_fp16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return half_to_float(h);
}

// 32-block b of a Q5_1 row: codes c[32] (0..31), scale *d, constant *m.
inline void q5_1_block(const uint8_t* row, int64_t b, uint8_t* c, float* d, float* m) {
  const uint8_t* p = row + b * kQ5_1Bytes;
  uint32_t qh;
  std::memcpy(&qh, p + 4, sizeof qh);
#if defined(__AVX2__)
  // byte j of the mask vector: bit j of qh (each 8-byte group takes one byte of qh, then one bit per byte)
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int>(qh)),
      _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
  const __m256i fifth = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(0x10));
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8));
  const __m256i nib = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0f));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(c), _mm256_or_si256(nib, fifth));
#else
  for (int j = 0; j < 16; ++j) {
    c[j] = (p[8 + j] & 0x0f) | (((qh >> j) & 1u) << 4);
    c[j + 16] = (p[8 + j] >> 4) | (((qh >> (j + 16)) & 1u) << 4);
  }
#endif
  *d = q5_fp16(p);
  *m = q5_fp16(p + 2);
}

// 32-block b of a Q5_K row: codes c[32] (0..31), scale *d = d sc, constant *m = -(dmin m), as gguf computes them
// (float32 products of an fp16 and a 6-bit integer: exact).
inline void q5_k_block(const uint8_t* row, int64_t b, uint8_t* c, float* d, float* m) {
  const uint8_t* p = row + (b / 8) * kQ5KBytes;
  const int sub = static_cast<int>(b % 8);
  int sc, mn;
  q4k_scale_min(p + 4, sub, &sc, &mn);
  const uint8_t* qh = p + 16;
  const uint8_t* qs = p + 48 + (sub / 2) * kBlock;
  const int shift = (sub % 2) * 4;
#if defined(__AVX2__)
  // 16-bit shifts move bits across bytes; each byte is masked after its right shift, before the left one
  const __m256i l = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs));
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh));
  const __m256i low = _mm256_and_si256(_mm256_srl_epi16(l, _mm_cvtsi32_si128(shift)), _mm256_set1_epi8(0x0f));
  const __m256i high = _mm256_slli_epi16(
      _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(sub)), _mm256_set1_epi8(0x01)), 4);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(c), _mm256_or_si256(low, high));
#else
  for (int j = 0; j < kBlock; ++j) c[j] = ((qs[j] >> shift) & 0x0f) | (((qh[j] >> sub) & 1) << 4);
#endif
  *d = q5_fp16(p) * static_cast<float>(sc);
  *m = -(q5_fp16(p + 2) * static_cast<float>(mn));
}

}  // namespace aios::blocks

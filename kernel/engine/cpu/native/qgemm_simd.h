// The instruction-set target attributes every kernel file compiles its ISA functions with (not the build's -march:
// see qgemm_kernels.cpp), and the SIMD helpers the raw-format decode-row kernels share (qgemm_raw_kernels.cpp,
// qgemm_q5_kernels.cpp): one definition of each.
#pragma once

#include "qgemm.h"

#include <immintrin.h>

#include <cstdint>

#define AVX2_TARGET __attribute__((target("avx2,fma,f16c")))
#define AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")))

namespace aios::blocks::simd {

AVX2_TARGET inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

AVX2_TARGET inline __m256i dot_avx2(__m256i q, const int8_t* x) {
  const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  return _mm256_madd_epi16(_mm256_maddubs_epi16(q, xv), _mm256_set1_epi16(1));
}

// 32 bytes of 0x10 where the bits of `bits` are set (bit j → byte j)
AVX2_TARGET inline __m256i fifth_bits_avx2(uint32_t bits) {
  const __m256i shuffle = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
  __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)), shuffle);
  bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
  return _mm256_and_si256(_mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1)), _mm256_set1_epi8(0x10));
}

// sum + (dot of two blocks' codes q with x) * scale * dx, the lanes' partial sums kept apart
AVX512_TARGET inline __m512 pair_dot_avx512(__m512i q, const int8_t* x, const float* d8, __m512 scale, __m512 sum) {
  const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, _mm512_loadu_si512(x));
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(scale, _mm512_loadu_ps(d8)), sum);
}

}  // namespace aios::blocks::simd

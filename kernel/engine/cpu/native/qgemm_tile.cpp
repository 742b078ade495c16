// Decoding a tile of weight rows for the blocked product (qgemm.h, Tile): every format's blocks, as block_weights.py
// packs them (Q8_0, Q4_0, Q4_1) or as the GGUF file stores them (Q5_0, Q4_K, Q6_K; Q5_K, Q5_1 in qgemm_q5.h), into unsigned codes with the
// rows in a vector's lanes, per-block float scales and constant terms. A tile is decoded once per call of the product
// and then multiplied by every activation row, so its cost is shared by all rows of a prompt; still, at a few hundred
// rows it was a visible part of the call, so the raw formats' codes are unpacked 32 at a time with AVX2 where the
// build has it (-march=native; the plain loops otherwise, and for the packed formats, which the compiler vectorizes):
// the same bytes either way, whatever instruction set the product then multiplies with. The scales are computed as
// GGUF's reference dequantizer computes them (d * sc and dmin * m in float32, exact: an fp16 times a 6- or 8-bit
// integer).
#include "qgemm.h"
#include "qgemm_q5.h"

#include <cstring>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace aios::blocks {
namespace {

inline float fp16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return half_to_float(h);
}

// One 32-block of one weight row (rows apart: grouped weights go through decode_group_tile): its unsigned codes c[32],
// the scales of its two 16-input halves, its constant.
template <Format F>
inline void decode_block(const Weights& w, int64_t n, int64_t b, uint8_t* c, float* d, float* m) {
  const uint8_t* row = w.codes + n * w.row_bytes;
  *m = 0.f;
  if constexpr (F == Format::Q8_0) {
    for (int j = 0; j < kBlock; ++j) c[j] = row[b * kBlock + j] ^ 0x80u;
    d[0] = d[1] = half_to_float(w.d[n * w.gp + b]);
  } else if constexpr (F == Format::Q4_0 || F == Format::Q4_1) {
    const int shift = (b % 2) * 4;
    const uint8_t* p = row + (b / 2) * kBlock;
    for (int j = 0; j < kBlock; ++j) c[j] = (p[j] >> shift) & 0x0f;
    d[0] = d[1] = half_to_float(w.d[n * w.gp + b]);
    if constexpr (F == Format::Q4_1) *m = half_to_float(w.m[n * w.gp + b]);
  } else if constexpr (F == Format::Q5_K || F == Format::Q5_1) {
    if constexpr (F == Format::Q5_K) q5_k_block(row, b, c, d, m);
    if constexpr (F == Format::Q5_1) q5_1_block(row, b, c, d, m);
    d[1] = d[0];
  } else if constexpr (F == Format::Q5_0) {
    const uint8_t* p = row + b * 22;
    uint32_t qh;
    std::memcpy(&qh, p + 2, sizeof qh);
#if defined(__AVX2__)
    // byte j of the mask vector: bit j of qh (each 8-byte group takes one byte of qh, then one bit per byte)
    const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(qh)),
                                               _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                                                 0x0101010101010101, 0));
    const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
    const __m256i fifth =
        _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(0x10));
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 6));
    const __m256i nib = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0f));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(c), _mm256_or_si256(nib, fifth));
#else
    for (int j = 0; j < 16; ++j) {
      c[j] = (p[6 + j] & 0x0f) | (((qh >> j) & 1u) << 4);
      c[j + 16] = (p[6 + j] >> 4) | (((qh >> (j + 16)) & 1u) << 4);
    }
#endif
    d[0] = d[1] = fp16_at(p);
  } else if constexpr (F == Format::Q4_K) {
    const uint8_t* p = row + (b / 8) * 144;
    const int sub = static_cast<int>(b % 8);
    const uint8_t* s = p + 4;
    int sc, mn;
    q4k_scale_min(s, sub, &sc, &mn);
    const uint8_t* qs = p + 16 + (sub / 2) * kBlock;
    const int shift = (sub % 2) * 4;
#if defined(__AVX2__)
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(c),
                        _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(shift)), _mm256_set1_epi8(0x0f)));
#else
    for (int j = 0; j < kBlock; ++j) c[j] = (qs[j] >> shift) & 0x0f;
#endif
    d[0] = d[1] = fp16_at(p) * static_cast<float>(sc);
    *m = -(fp16_at(p + 2) * static_cast<float>(mn));
  } else {  // Q6_K: 32-block `sub` of the super-block is quarter `sub % 4` of its half `sub / 4`
    const uint8_t* p = row + (b / 8) * 210;
    const int sub = static_cast<int>(b % 8), half = sub / 4, quarter = sub % 4;
    const uint8_t* ql = p + 64 * half + (quarter % 2) * 32;
    const uint8_t* qh = p + 128 + 32 * half;
    const int8_t* sc = reinterpret_cast<const int8_t*>(p + 192) + 8 * half + 2 * quarter;
    const int low_shift = (quarter / 2) * 4, high_shift = 2 * quarter;
#if defined(__AVX2__)
    // 16-bit shifts move bits across bytes; each byte is masked after its right shift, before the left one
    const __m256i l = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh));
    const __m256i low = _mm256_and_si256(_mm256_srl_epi16(l, _mm_cvtsi32_si128(low_shift)), _mm256_set1_epi8(0x0f));
    const __m256i high = _mm256_slli_epi16(
        _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(high_shift)), _mm256_set1_epi8(0x03)), 4);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(c), _mm256_or_si256(low, high));
#else
    for (int j = 0; j < kBlock; ++j) {
      c[j] = ((ql[j] >> low_shift) & 0x0f) | (((qh[j] >> high_shift) & 3) << 4);
    }
#endif
    const float dd = fp16_at(p + 208);
    d[0] = dd * static_cast<float>(sc[0]);
    d[1] = dd * static_cast<float>(sc[1]);
  }
}

// A whole group of grouped weights (qgemm.h): its codes are already in the tile's lanes, four inputs per row at a
// time, so decoding is a pass over 512 bytes per block (nibbles split, Q8_0 biased) and the scales' conversion; the
// plain loops vectorize.
template <Format F>
void decode_group_tile(const Weights& w, int64_t n0, Tile& t) {
  const int64_t g = n0 / kGroupRows;
  const uint8_t* codes = w.codes + g * kGroupRows * w.row_bytes;
  constexpr int64_t unit = 8 * kGroupRows * 4;
  for (int64_t b = 0; b < t.g; ++b) {
    uint8_t* q = t.q + b * unit;
    if constexpr (F == Format::Q8_0) {
      const uint8_t* p = codes + b * unit;
      for (int64_t k = 0; k < unit; ++k) q[k] = p[k] ^ 0x80u;
    } else {
      const uint8_t* p = codes + (b / 2) * unit;
      const int shift = (b % 2) * 4;
      for (int64_t k = 0; k < unit; ++k) q[k] = (p[k] >> shift) & 0x0f;
    }
    const uint16_t* d = w.d + (g * w.gp + b) * kGroupRows;
    for (int64_t i = 0; i < kGroupRows; ++i) {
      t.d[(b * 2) * kTileN + i] = t.d[(b * 2 + 1) * kTileN + i] = half_to_float(d[i]);
    }
    for (int64_t i = 0; i < kGroupRows; ++i) {
      t.m[b * kTileN + i] = F == Format::Q4_1 ? half_to_float(w.m[(g * w.gp + b) * kGroupRows + i]) : 0.f;
    }
  }
}

template <Format F>
void decode_tile_as(const Weights& w, int64_t n0, int64_t rows, Tile& t) {
  static_assert(kTileN == kGroupRows, "a tile is a group");
  if constexpr (F == Format::Q8_0 || F == Format::Q4_0 || F == Format::Q4_1) {
    if (w.grouped) return decode_group_tile<F>(w, n0, t);   // grouped: N and so every tile's rows a whole group
  }
  uint8_t c[kBlock];
  float d[2], m;
  for (int64_t i = 0; i < kTileN; ++i) {
    for (int64_t b = 0; b < t.g; ++b) {
      if (i < rows) {
        decode_block<F>(w, n0 + i, b, c, d, &m);
      } else {  // rows past the matrix: codes at the bias and zero scales give zero
        std::memset(c, 0, sizeof c);
        d[0] = d[1] = m = 0.f;
      }
      uint8_t* q = t.q + b * 8 * kTileN * 4 + i * 4;
      for (int k4 = 0; k4 < 8; ++k4) std::memcpy(q + k4 * kTileN * 4, c + 4 * k4, 4);
      t.d[(b * 2) * kTileN + i] = d[0];
      t.d[(b * 2 + 1) * kTileN + i] = d[1];
      t.m[b * kTileN + i] = m;
    }
  }
}

// One weight row against 1-4 activation rows straight from decode_block: the raw formats' scalar reference, with the
// tile kernels' arithmetic (exact integer dot per half minus bias * sum(x), then d * dx, then m * s).
template <Format F>
__attribute__((optimize("no-tree-vectorize"))) void row_scalar_raw(const Weights& w, int64_t n, const Acts& a,
                                                                    int64_t t0, int64_t rows, float* out) {
  const int32_t bias = F == Format::Q5_0 ? 16 : F == Format::Q6_K ? 32 : 0;
  constexpr int64_t block_bytes = F == Format::Q5_0   ? 22
                                  : F == Format::Q4_K ? 144
                                  : F == Format::Q5_K ? kQ5KBytes
                                  : F == Format::Q5_1 ? kQ5_1Bytes
                                                      : 210;
  constexpr int64_t blocks_per = F == Format::Q5_0 || F == Format::Q5_1 ? 1 : 8;   // 32-blocks per stored block
  const int64_t g = w.row_bytes / block_bytes * blocks_per;
  uint8_t c[kBlock];
  float d[2], m;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = t0 + r;
    const int8_t* xq = a.q + t * a.gp * kBlock;
    float acc = 0.f;
    for (int64_t b = 0; b < g; ++b) {
      decode_block<F>(w, n, b, c, d, &m);
      int32_t dot[2] = {0, 0};
      for (int64_t j = 0; j < kBlock; ++j) dot[j / 16] += c[j] * xq[b * kBlock + j];
      const int32_t* h = a.h16 + t * a.gp * 2 + 2 * b;
      const float dx = a.d[t * a.gp + b];
      acc += static_cast<float>(dot[0] - bias * h[0]) * (d[0] * dx);
      acc += static_cast<float>(dot[1] - bias * h[1]) * (d[1] * dx);
      acc += m * a.s[t * a.gp + b];
    }
    out[r] = acc;
  }
}

}  // namespace

RowKernel scalar_raw_kernel(Format f) {
  switch (f) {
    case Format::Q5_0: return row_scalar_raw<Format::Q5_0>;
    case Format::Q4_K: return row_scalar_raw<Format::Q4_K>;
    case Format::Q6_K: return row_scalar_raw<Format::Q6_K>;
    case Format::Q5_K: return row_scalar_raw<Format::Q5_K>;
    case Format::Q5_1: return row_scalar_raw<Format::Q5_1>;
    default: return nullptr;
  }
}

int32_t format_bias(Format f) {
  switch (f) {
    case Format::Q8_0: return 128;
    case Format::Q4_0: return 8;
    case Format::Q5_0: return 16;
    case Format::Q6_K: return 32;
    default: return 0;
  }
}

void decode_tile(Format f, const Weights& w, int64_t n0, int64_t rows, Tile& t) {
  t.bias = format_bias(f);
  t.split = f == Format::Q6_K;
  t.has_m = f == Format::Q4_1 || f == Format::Q4_K || f == Format::Q5_K || f == Format::Q5_1;
  switch (f) {
    case Format::Q8_0: return decode_tile_as<Format::Q8_0>(w, n0, rows, t);
    case Format::Q4_0: return decode_tile_as<Format::Q4_0>(w, n0, rows, t);
    case Format::Q4_1: return decode_tile_as<Format::Q4_1>(w, n0, rows, t);
    case Format::Q5_0: return decode_tile_as<Format::Q5_0>(w, n0, rows, t);
    case Format::Q4_K: return decode_tile_as<Format::Q4_K>(w, n0, rows, t);
    case Format::Q6_K: return decode_tile_as<Format::Q6_K>(w, n0, rows, t);
    case Format::Q5_K: return decode_tile_as<Format::Q5_K>(w, n0, rows, t);
    case Format::Q5_1: return decode_tile_as<Format::Q5_1>(w, n0, rows, t);
  }
}

}  // namespace aios::blocks

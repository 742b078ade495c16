// Products with GGUF block-quantized weights (Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q6_K, Q5_K, Q5_1) and activations quantized to int8
// per 32-block (block_weights.py packs or passes the weights; qgemm_kernels.cpp multiplies one weight row against a
// few activation rows; qgemm_tile*.cpp decode a tile of weight rows and multiply it by many rows; qgemm.cpp is the op).
//
// Weights, one row per output feature, Gp blocks of 32 inputs (the row's G blocks padded to an even count with zero
// blocks, which add nothing):
//   Q8_0  codes int8 [N, Gp * 32] as stored;                              w = d * q
//   Q4_0  codes [N, Gp / 2, 32] bytes: byte j of pair p holds weight j of block 2p in its low nibble and weight j of
//         block 2p + 1 in its high nibble (one 32-byte load unpacks two whole blocks);  w = d * (q - 8)
//   Q4_1  the same nibble layout;                                         w = d * q + m
//   scales fp16 [S, N, Gp]: plane 0 the blocks' d, plane 1 (Q4_1 only) their m. The same bytes per weight as the file.
//   grouped (block_weights.py packs Q8_0 / Q4_0 / Q4_1 so when N is a multiple of kGroupRows): the same bytes, the
//         rows interleaved in groups of 16 so that a vector's lanes are 16 rows (the group kernels below): group g's
//         codes at byte g * 16 * row bytes, in units of 32 bytes per row (a Q8_0 block, a pair of 4-bit blocks)
//         [units u][8 fours j][16 rows i][4]: byte c of (u, j, i) is row 16g + i's byte 4j + c of unit u (Q8_0: input
//         4j + c of block u; 4-bit: that input of block 2u in the low nibble, of 2u + 1 in the high); scales fp16
//         [S, N / 16, Gp, 16].
//   Q5_0, Q4_K, Q6_K (the raw formats): codes [N, row bytes] are the file's blocks as stored, no scale planes:
//         Q5_0 22 bytes per 32 (fp16 d, 32 high bits, 16 bytes of nibbles; w = d * (q - 16)),
//         Q4_K 144 per 256 (fp16 d, fp16 dmin, eight 6-bit scales and mins, 128 bytes of nibbles; w = d sc q - dmin m),
//         Q6_K 210 per 256 (128 bytes low nibbles, 64 bytes of 2-bit highs, 16 int8 scales, fp16 d; w = d sc (q - 32)),
//         Q5_K 176 per 256 (Q4_K's fields, then 32 bytes of fifth bits before the nibbles; w = d sc q - dmin m),
//         Q5_1 24 per 32 (fp16 d, fp16 m, 32 high bits, 16 bytes of nibbles; w = d q + m): qgemm_q5.h.
// Activations, per row t and block b: q int8 [T, Gp * 32], d = amax / 127, s = d * sum(q) (llama.cpp's q8_1), d
// repeated 8 times (d8) for the 512-bit kernels, whose lanes hold two blocks' partial sums, and the integer sums of q
// over each 16-input half (h16, for the tiles' bias correction and Q6_K's 16-weight scales).
//
// Every kernel computes, per (weight row, activation row), sum_b dw_b dx_b idot_b + sum_b c_b s_b, where idot_b is the
// block's integer dot product (exact) and c_b the block's constant term: Q4_0 -8 dw_b, Q4_1 m_b, and Q8_0 on the VNNI
// path -128 dw_b (its codes are biased to unsigned bytes there). Only the float summation order differs between ISAs.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace aios::blocks {

enum class Format : int64_t { Q8_0 = 0, Q4_0 = 1, Q4_1 = 2, Q5_0 = 3, Q4_K = 4, Q6_K = 5, Q5_K = 6, Q5_1 = 7 };
constexpr int64_t kFormats = 8;
enum class Isa : int64_t { AUTO = -1, SCALAR = 0, AVX2 = 1, AVX512 = 2 };

constexpr int64_t kBlock = 32;
constexpr int64_t kMaxRows = 4;        // activation rows one kernel call multiplies against a weight row

// Calls kernel(std::integral_constant<int, R>{}) with R = rows (1..kMaxRows): the row kernels take their row count at
// compile time, so each row's accumulators stay in registers; one switch serves every format and instruction set.
template <typename Kernel>
inline void with_row_count(int64_t rows, Kernel&& kernel) {
  static_assert(kMaxRows == 4, "a case per row count");
  switch (rows) {
    case 4: return kernel(std::integral_constant<int, 4>{});
    case 3: return kernel(std::integral_constant<int, 3>{});
    case 2: return kernel(std::integral_constant<int, 2>{});
    default: return kernel(std::integral_constant<int, 1>{});
  }
}

struct Weights {
  const uint8_t* codes;
  const uint16_t* d;      // [N, Gp] fp16 (grouped: [N / 16, Gp, 16])
  const uint16_t* m;      // [N, Gp] fp16 (Q4_1) or nullptr
  int64_t gp;             // blocks per row, even
  int64_t row_bytes;      // codes bytes per row
  bool grouped = false;   // rows interleaved by kGroupRows (above): only the group kernels and decode_tile read them
};

struct Acts {
  const int8_t* q;        // [T, Gp * 32]
  const float* d;         // [T, Gp]
  const float* s;         // [T, Gp]
  const float* d8;        // [T, Gp * 8]
  const int32_t* h16;     // [T, Gp * 2]
  int64_t gp;
};

// out[r] = row n of the weights times activation row t0 + r, for r < rows (1..kMaxRows).
using RowKernel = void (*)(const Weights& w, int64_t n, const Acts& a, int64_t t0, int64_t rows, float* out);

RowKernel scalar_kernel(Format f);
RowKernel avx2_kernel(Format f);
RowKernel avx512_kernel(Format f);
// The raw formats' row kernels: scalar from the tile decoder's block decoding (qgemm_tile.cpp), the SIMD ones reading
// the file's blocks directly (qgemm_raw_kernels.cpp).
RowKernel scalar_raw_kernel(Format f);
RowKernel avx2_raw_kernel(Format f);
RowKernel avx512_raw_kernel(Format f);
RowKernel avx2_q5_kernel(Format f);     // Q5_K, Q5_1 (qgemm_q5_kernels.cpp), through the two above
RowKernel avx512_q5_kernel(Format f);

// ---- the group kernels (qgemm_group_kernels.cpp): decode rows of grouped weights -----------------------------------
// A weight row's sum is a chain of dependent multiply-adds and its activation blocks are re-read for every row: at batch
// 1 the row kernels spent more time than the weights took to arrive (Q4_0 from L3 at 18 GB/s on one Zen 4 core). With
// 16 rows in a vector's lanes an activation's four codes are broadcast once for 16 rows, the blocks' integer dots need
// no horizontal sums, and one multiply-add per block covers 16 rows. Per (weight row, activation row) every ISA computes
// the same float operations in the same order (so all give the same bits):
//     acc = fma(float(dot_b - bias * sum(x_b)), d_b * dx_b, acc);  Q4_1 then  acc = fma(m_b, s_b, acc)
// with dot_b the block's exact integer dot of the codes with the int8 activations (Q4_0's mean code - 8: bias 8; Q4_1's
// and Q8_0's codes are their values: bias 0).
constexpr int64_t kGroupRows = 16;
constexpr int64_t kGroupMaxRows = 8;   // activation rows one group-kernel call multiplies

// out[r * kGroupRows + i] = weight row g * kGroupRows + i times activation row t0 + r, r < rows (1..kGroupMaxRows).
using GroupKernel = void (*)(const Weights& w, int64_t g, const Acts& a, int64_t t0, int64_t rows, float* out);
GroupKernel scalar_group_kernel(Format f);   // nullptr for a format with no grouped layout
GroupKernel avx2_group_kernel(Format f);
GroupKernel avx512_group_kernel(Format f);
inline bool groupable(Format f) { return f == Format::Q4_0 || f == Format::Q4_1 || f == Format::Q8_0; }

// Inline: the row kernels convert a scale per 32-block, and an out-of-line call per block held Q5_0's AVX2 row to
// a fraction of the read bandwidth.
inline float half_to_float(uint16_t h) {
#ifdef __F16C__
  return _cvtsh_ss(h);  // the build's -march has it (every AVX2 CPU): one instruction, the same value
#else
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    const float f = static_cast<float>(mant) * 5.9604644775390625e-08f;      // subnormal (or zero): mant * 2^-24
    return sign ? -f : f;
  }
  bits = exp == 31 ? (sign | 0x7f800000u | (mant << 13)) : (sign | ((exp + 112u) << 23) | (mant << 13));
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
#endif
}

// Q4_K's 6-bit scale and min of 32-block j (0..7) of a super-block, from its 12 packed bytes (llama.cpp's layout).
inline void q4k_scale_min(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// ---- the blocked product (qgemm_tile.cpp, qgemm_tile_kernels.cpp) ----------------------------------------------------
// A tile is kTileN weight rows decoded once into a layout where a vector's lanes are the rows: per 32-block b and
// group of four inputs k4, 16 rows x 4 unsigned codes (64 bytes: one 512-bit or two 256-bit vectors). The codes are
// the stored unsigned ones (Q8_0's xor 0x80), w = d * (code - bias) + m per block (Q6_K: d per 16-input half), so a
// tile kernel sums exact integer dots of the codes with the int8 activations, subtracts bias * sum(x) (an integer)
// and applies d * dx and m * s in float32. Decoding is per tile and transient (a few tens of KiB): nothing per weight
// is kept beyond the stored codes.
constexpr int64_t kTileN = 16;
constexpr int64_t kTileRows = 6;       // activation rows one tile-kernel call multiplies

struct Tile {
  uint8_t* q;             // [G][8][kTileN][4]
  float* d;               // [G][2][kTileN]: each half's scale (both halves equal except Q6_K)
  float* m;               // [G][kTileN]: the block's constant term (Q4_1, Q4_K, Q5_K, Q5_1), else zero
  int64_t g;              // blocks of 32 per row
  int32_t bias;           // the code that means zero
  bool split;             // two scales per block (Q6_K)
  bool has_m;
};

// Rows n0 .. n0 + rows (rows <= kTileN, the rest zero) of the weights into the tile.
void decode_tile(Format f, const Weights& w, int64_t n0, int64_t rows, Tile& t);
int32_t format_bias(Format f);

// out[r * kTileN + i] = tile row i times activation row t0 + r, r < rows (1..kTileRows).
using TileKernel = void (*)(const Tile& t, const Acts& a, int64_t t0, int64_t rows, float* out);
TileKernel scalar_tile_kernel();
TileKernel avx2_tile_kernel(bool wide);   // wide: 8-bit codes (Q8_0), which maddubs would saturate unsigned
TileKernel avx512_tile_kernel();

}  // namespace aios::blocks

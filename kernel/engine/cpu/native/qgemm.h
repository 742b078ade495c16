// Products with GGUF block-quantized weights (Q8_0, Q4_0, Q4_1) and activations quantized to int8 per 32-block, in
// the kernel's layout (block_weights.py writes it; qgemm_kernels.cpp multiplies it; qgemm.cpp is the torch op).
//
// Weights, one row per output feature, Gp blocks of 32 inputs (the row's G blocks padded to an even count with zero
// blocks, which add nothing):
//   Q8_0  codes int8 [N, Gp * 32] as stored;                              w = d * q
//   Q4_0  codes [N, Gp / 2, 32] bytes: byte j of pair p holds weight j of block 2p in its low nibble and weight j of
//         block 2p + 1 in its high nibble (one 32-byte load unpacks two whole blocks);  w = d * (q - 8)
//   Q4_1  the same nibble layout;                                         w = d * q + m
//   scales fp16 [S, N, Gp]: plane 0 the blocks' d, plane 1 (Q4_1 only) their m. The same bytes per weight as the file.
// Activations, per row t and block b: q int8 [T, Gp * 32], d = amax / 127, s = d * sum(q) (llama.cpp's q8_1), and d
// repeated 8 times (d8) for the 512-bit kernels, whose lanes hold two blocks' partial sums.
//
// Every kernel computes, per (weight row, activation row), sum_b dw_b dx_b idot_b + sum_b c_b s_b, where idot_b is the
// block's integer dot product (exact) and c_b the block's constant term: Q4_0 -8 dw_b, Q4_1 m_b, and Q8_0 on the VNNI
// path -128 dw_b (its codes are biased to unsigned bytes there). Only the float summation order differs between ISAs.
#pragma once

#include <cstdint>

namespace aios::blocks {

enum class Format : int64_t { Q8_0 = 0, Q4_0 = 1, Q4_1 = 2 };
enum class Isa : int64_t { AUTO = -1, SCALAR = 0, AVX2 = 1, AVX512 = 2 };

constexpr int64_t kBlock = 32;
constexpr int64_t kMaxRows = 4;        // activation rows one kernel call multiplies against a weight row

struct Weights {
  const uint8_t* codes;
  const uint16_t* d;      // [N, Gp] fp16
  const uint16_t* m;      // [N, Gp] fp16 (Q4_1) or nullptr
  int64_t gp;             // blocks per row, even
  int64_t row_bytes;      // codes bytes per row
};

struct Acts {
  const int8_t* q;        // [T, Gp * 32]
  const float* d;         // [T, Gp]
  const float* s;         // [T, Gp]
  const float* d8;        // [T, Gp * 8]
  int64_t gp;
};

// out[r] = row n of the weights times activation row t0 + r, for r < rows (1..kMaxRows).
using RowKernel = void (*)(const Weights& w, int64_t n, const Acts& a, int64_t t0, int64_t rows, float* out);

RowKernel scalar_kernel(Format f);
RowKernel avx2_kernel(Format f);
RowKernel avx512_kernel(Format f);

float half_to_float(uint16_t h);

}  // namespace aios::blocks

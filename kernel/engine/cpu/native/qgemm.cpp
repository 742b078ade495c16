// torch.ops.aios_cpu.qgemm: y = x Wᵀ with W in a GGUF block format (qgemm.h), x quantized to int8 per 32-block on
// the way in, the same weights for any number of rows:
//   decode rows (up to kRowPathRows) are a matrix-vector product bound by the weights' bytes: each weight row is read
//     once and multiplied by up to four activation rows while in registers (qgemm_kernels.cpp for the packed
//     formats, qgemm_raw_kernels.cpp for the file's Q5_0 / Q4_K / Q6_K blocks);
//   more rows go through the blocked product: kTileGroup tiles of kTileN
//     weight rows are decoded once (qgemm_tile.cpp, ~130 KiB at 2048 inputs, in L2) and multiplied by every group of
//     kTileRows activation rows (read once per group of tiles, from L1) with the rows in the vector lanes (qgemm_tile_kernels.cpp), so the weights cross the
//     memory bus once per call and are unpacked once per call, not once per activation row.
// Output rows are split across threads (at::parallel_for, torch's intra-op threads) by tiles of weight rows, handed
// out from a shared counter (a thread that loses its core leaves its share to the others); every
// output value is one kernel's fixed-order sum, so a row's result does not depend on the other rows or the threads
// within a path (the decode-row path and the blocked path sum in different orders: results may differ in the last
// float bits between a call of few rows and one of many).
// The instruction set is picked at run time (__builtin_cpu_supports), capped by AIOS_QGEMM_ISA=scalar|avx2|avx512.
#include "ops.h"
#include "qgemm.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

namespace aios {
namespace {

using blocks::Acts;
using blocks::Format;
using blocks::Isa;
using blocks::kBlock;
using blocks::kMaxRows;
using blocks::kTileN;
using blocks::kTileRows;

constexpr int64_t kTile = 16;          // weight rows per task
constexpr int64_t kRowPathRows = 8;    // up to this many rows, the row kernels (decode)
constexpr int64_t kTileGroup = 4;      // tiles decoded per task of the blocked product (64 weight rows, ~130 KiB at
                                       // 2048 inputs: L2), each group of activation rows applied to all of them

bool is_raw(Format f) { return f == Format::Q5_0 || f == Format::Q4_K || f == Format::Q6_K; }

// (weights per block, bytes per block) of the raw formats, as GGUF stores them
std::pair<int64_t, int64_t> raw_block(Format f) {
  switch (f) {
    case Format::Q5_0: return {32, 22};
    case Format::Q4_K: return {256, 144};
    default: return {256, 210};
  }
}

bool cpu_has(Isa isa) {
  __builtin_cpu_init();
  switch (isa) {
    case Isa::SCALAR: return true;
    case Isa::AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::AVX512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vnni");
    default: return false;
  }
}

// The environment's cap (AIOS_QGEMM_ISA), read at each call so that a process can test each path.
Isa env_cap() {
  const char* value = std::getenv("AIOS_QGEMM_ISA");
  if (value == nullptr || *value == '\0') return Isa::AVX512;
  if (std::strcmp(value, "scalar") == 0) return Isa::SCALAR;
  if (std::strcmp(value, "avx2") == 0) return Isa::AVX2;
  if (std::strcmp(value, "avx512") == 0) return Isa::AVX512;
  TORCH_CHECK(false, "AIOS_QGEMM_ISA must be scalar, avx2 or avx512, not '", value, "'");
  return Isa::SCALAR;
}

Isa resolve(int64_t requested) {
  if (requested >= 0) {
    TORCH_CHECK(requested <= static_cast<int64_t>(Isa::AVX512), "unknown qgemm instruction set ", requested);
    TORCH_CHECK(cpu_has(static_cast<Isa>(requested)), "this CPU lacks qgemm instruction set ", requested);
    return static_cast<Isa>(requested);
  }
  const Isa cap = env_cap();
  for (Isa isa : {Isa::AVX512, Isa::AVX2}) {
    if (isa <= cap && cpu_has(isa)) return isa;
  }
  return Isa::SCALAR;
}

blocks::RowKernel kernel_for(Isa isa, Format f) {
  if (is_raw(f)) {
    switch (isa) {
      case Isa::AVX512: return blocks::avx512_raw_kernel(f);
      case Isa::AVX2: return blocks::avx2_raw_kernel(f);
      default: return blocks::scalar_raw_kernel(f);
    }
  }
  switch (isa) {
    case Isa::AVX512: return blocks::avx512_kernel(f);
    case Isa::AVX2: return blocks::avx2_kernel(f);
    default: return blocks::scalar_kernel(f);
  }
}

blocks::TileKernel tile_kernel_for(Isa isa, Format f) {
  switch (isa) {
    case Isa::AVX512: return blocks::avx512_tile_kernel();
    case Isa::AVX2: return blocks::avx2_tile_kernel(f == Format::Q8_0);
    default: return blocks::scalar_tile_kernel();
  }
}

Format check_format(int64_t format) {
  TORCH_CHECK(format >= 0 && format < blocks::kFormats, "unknown block format ", format);
  return static_cast<Format>(format);
}

// Row t of x [T, K] (any float dtype, unit stride along K) into its int8 blocks, padded to gp blocks (qgemm.h):
// q [gp*32], d [gp], s [gp], d8 [gp*8], h16 [gp*2]. Per block: d = amax / 127, q = round-half-even(x * (1 / d)),
// llama.cpp's q8_0; h16 the integer sums of q over each half.
template <typename T>
void quantize_row(const T* v, int64_t G, int64_t gp, int8_t* q, float* d, float* s, float* d8, int32_t* h16) {
  for (int64_t b = 0; b < G; ++b, v += kBlock) {
    float x[kBlock], amax = 0.f;
    for (int64_t j = 0; j < kBlock; ++j) {
      x[j] = static_cast<float>(v[j]);
      amax = std::max(amax, std::fabs(x[j]));
    }
    const float scale = amax / 127.f, inv = scale != 0.f ? 1.f / scale : 0.f;
    int32_t half_sum[2] = {0, 0};
    for (int64_t j = 0; j < kBlock; ++j) {
      const float r = std::nearbyint(x[j] * inv);
      q[b * kBlock + j] = static_cast<int8_t>(r);
      half_sum[j / 16] += static_cast<int32_t>(r);
    }
    d[b] = scale;
    s[b] = scale * static_cast<float>(half_sum[0] + half_sum[1]);
    h16[2 * b] = half_sum[0];
    h16[2 * b + 1] = half_sum[1];
    std::fill(d8 + b * 8, d8 + (b + 1) * 8, scale);
  }
  std::fill(q + G * kBlock, q + gp * kBlock, int8_t{0});      // padding blocks add nothing
  std::fill(d + G, d + gp, 0.f);
  std::fill(s + G, s + gp, 0.f);
  std::fill(d8 + G * 8, d8 + gp * 8, 0.f);
  std::fill(h16 + G * 2, h16 + gp * 2, 0);
}

void quantize_rows(const at::Tensor& x, int64_t gp, int8_t* q, float* d, float* s, float* d8, int32_t* h16) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) % kBlock == 0 && x.stride(1) == 1,
              "x must be [T, K], K a multiple of 32, unit stride along K");
  const int64_t T = x.size(0), G = x.size(1) / kBlock, stride = x.stride(0);
  TORCH_CHECK(gp >= G, "padding below the input's blocks");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "qgemm_quantize", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    at::parallel_for(0, T, 16, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        quantize_row(xp + t * stride, G, gp, q + t * gp * kBlock, d + t * gp, s + t * gp, d8 + t * gp * 8,
                     h16 + t * gp * 2);
      }
    });
  });
}

}  // namespace

// x [T, K] → {q int8 [T, gp*32], d [T, gp], s [T, gp], d8 [T, gp*8], h16 int32 [T, gp*2]}: what qgemm multiplies
// (exposed for tests).
std::vector<at::Tensor> qgemm_quantize(const at::Tensor& x, int64_t gp) {
  const at::Tensor xc = x.dim() == 2 && x.stride(1) == 1 ? x : x.contiguous();
  const int64_t T = x.size(0);
  auto q = at::empty({T, gp * kBlock}, x.options().dtype(at::kChar));
  auto d = at::empty({T, gp}, x.options().dtype(at::kFloat));
  auto s = at::empty({T, gp}, x.options().dtype(at::kFloat));
  auto d8 = at::empty({T, gp * 8}, x.options().dtype(at::kFloat));
  auto h16 = at::empty({T, gp * 2}, x.options().dtype(at::kInt));
  quantize_rows(xc, gp, q.data_ptr<int8_t>(), d.data_ptr<float>(), s.data_ptr<float>(), d8.data_ptr<float>(),
                h16.data_ptr<int32_t>());
  return {q, d, s, d8, h16};
}

// x [T, K] float32/bfloat16/float16; codes and scales as block_weights.py packs them (qgemm.h; the raw formats: the
// file's bytes, scales ignored); format: Format; isa: Isa (-1: the best this CPU has, under AIOS_QGEMM_ISA).
// Returns [T, N] in x's dtype, each value rounded once. One workspace holds the quantized activations: a decode step
// makes ~4 of these calls per layer, so allocations and dtype conversions around the product are a visible part of a
// small model's step.
at::Tensor qgemm(const at::Tensor& x_in, const at::Tensor& codes, const at::Tensor& scales, int64_t format,
                 int64_t isa) {
  const Format f = check_format(format);
  TORCH_CHECK(x_in.dim() == 2, "x must be [T, K]");
  const at::Tensor x = x_in.stride(1) == 1 ? x_in : x_in.contiguous();
  TORCH_CHECK(codes.dim() == 2 && codes.is_contiguous() && codes.scalar_type() == at::kByte, "codes: [N, bytes] uint8");
  const int64_t T = x.size(0), K = x.size(1), N = codes.size(0);
  TORCH_CHECK(K % kBlock == 0, "x has ", K, " inputs, not a multiple of 32");
  int64_t gp, row_bytes;
  const uint16_t* sc = nullptr;
  if (is_raw(f)) {
    const auto [per_block, block_bytes] = raw_block(f);
    TORCH_CHECK(K % per_block == 0 && codes.size(1) == K / per_block * block_bytes, "x has ", K,
                " inputs, the weights' rows ", codes.size(1), " bytes of ", block_bytes, "-byte blocks of ",
                per_block);
    gp = K / kBlock + (K / kBlock) % 2;
    row_bytes = codes.size(1);
  } else {
    TORCH_CHECK(scales.dim() == 3 && scales.is_contiguous() && scales.scalar_type() == at::kHalf &&
                scales.size(0) == (f == Format::Q4_1 ? 2 : 1) && scales.size(1) == N,
                "scales: [1 or 2 (Q4_1), N, blocks] float16");
    gp = scales.size(2);
    row_bytes = f == Format::Q8_0 ? gp * kBlock : gp * kBlock / 2;
    TORCH_CHECK(gp % 2 == 0 && codes.size(1) == row_bytes, "codes and scales disagree on the blocks per row");
    TORCH_CHECK(K / kBlock <= gp && K / kBlock > gp - 2, "x has ", K, " inputs, the weights ", gp * kBlock,
                " (padded)");
    sc = reinterpret_cast<const uint16_t*>(scales.data_ptr<at::Half>());
  }
  const Isa chosen = resolve(isa);
  auto y = at::empty({T, N}, x.options());
  if (T == 0 || N == 0) return y;
  const int64_t q_bytes = T * gp * kBlock;                      // a multiple of 64: the floats after it stay aligned
  auto workspace = at::empty({q_bytes + T * gp * 12 * static_cast<int64_t>(sizeof(float))},
                             x.options().dtype(at::kByte));
  int8_t* q = reinterpret_cast<int8_t*>(workspace.data_ptr<uint8_t>());
  float* d = reinterpret_cast<float*>(workspace.data_ptr<uint8_t>() + q_bytes);
  float *s = d + T * gp, *d8 = s + T * gp;
  int32_t* h16 = reinterpret_cast<int32_t*>(d8 + T * gp * 8);
  quantize_rows(x, gp, q, d, s, d8, h16);
  const Acts a{q, d, s, d8, h16, gp};
  const blocks::Weights w{codes.data_ptr<uint8_t>(), sc, f == Format::Q4_1 ? sc + N * gp : nullptr, gp, row_bytes};
  const bool blocked = T > kRowPathRows;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, y.scalar_type(), "qgemm", [&] {
    scalar_t* yp = y.data_ptr<scalar_t>();
    if (blocked) {
      const blocks::TileKernel kernel = tile_kernel_for(chosen, f);
      const int64_t g = K / kBlock, span = kTileGroup * kTileN;
      // Tasks are taken from a shared counter, not split in equal ranges: on a busy machine a thread that loses its
      // core for a while leaves its tiles to the others (a tile's values do not depend on the thread).
      const int64_t tasks = (N + span - 1) / span;
      std::atomic<int64_t> next{0};
      at::parallel_for(0, std::min<int64_t>(tasks, at::get_num_threads()), 1, [&](int64_t, int64_t) {
        std::vector<uint8_t> codes_tiles(kTileGroup * g * 8 * kTileN * 4);
        std::vector<float> floats_tiles(kTileGroup * g * 3 * kTileN);
        blocks::Tile tiles[kTileGroup];
        for (int64_t j = 0; j < kTileGroup; ++j) {
          float* floats = floats_tiles.data() + j * g * 3 * kTileN;
          tiles[j] = {codes_tiles.data() + j * g * 8 * kTileN * 4, floats, floats + g * 2 * kTileN, g, 0, false, false};
        }
        float out[kTileRows * kTileN];
        for (int64_t task = next.fetch_add(1); task < tasks; task = next.fetch_add(1)) {
          const int64_t first = task * span, count = std::min(kTileGroup, (N - first + kTileN - 1) / kTileN);
          for (int64_t j = 0; j < count; ++j) {
            blocks::decode_tile(f, w, first + j * kTileN, std::min(kTileN, N - first - j * kTileN), tiles[j]);
          }
          for (int64_t t0 = 0; t0 < T; t0 += kTileRows) {   // these rows' activations stay in L1 across the tiles
            const int64_t rows = std::min(kTileRows, T - t0);
            for (int64_t j = 0; j < count; ++j) {
              const int64_t n0 = first + j * kTileN, rows_n = std::min(kTileN, N - n0);
              kernel(tiles[j], a, t0, rows, out);
              for (int64_t r = 0; r < rows; ++r) {
                scalar_t* yr = yp + (t0 + r) * N + n0;
                for (int64_t i = 0; i < rows_n; ++i) yr[i] = static_cast<scalar_t>(out[r * kTileN + i]);
              }
            }
          }
        }
      });
      return;
    }
    const blocks::RowKernel kernel = kernel_for(chosen, f);
    // Tiles of weight rows from a shared counter too: a decode call lasts well under a millisecond, so with equal
    // static ranges a thread that lost its core for one scheduler slice made the whole call wait for it (at 2
    // threads beside other work, decode rows fell to a few percent of the read bandwidth).
    const int64_t tiles = (N + kTile - 1) / kTile;
    std::atomic<int64_t> next{0};
    at::parallel_for(0, std::min<int64_t>(tiles, at::get_num_threads()), 1, [&](int64_t, int64_t) {
      float out[kMaxRows];
      for (int64_t tile = next.fetch_add(1); tile < tiles; tile = next.fetch_add(1)) {
        const int64_t n0 = tile * kTile, n1 = std::min(N, n0 + kTile);
        for (int64_t t0 = 0; t0 < T; t0 += kMaxRows) {
          const int64_t rows = std::min(kMaxRows, T - t0);
          for (int64_t n = n0; n < n1; ++n) {
            kernel(w, n, a, t0, rows, out);
            for (int64_t r = 0; r < rows; ++r) yp[(t0 + r) * N + n] = static_cast<scalar_t>(out[r]);
          }
        }
      }
    });
  });
  return y;
}

// The instruction set qgemm would use for `requested` (-1: automatic), or -1 when this CPU lacks it.
int64_t qgemm_isa(int64_t requested) {
  if (requested >= 0) return requested <= 2 && cpu_has(static_cast<Isa>(requested)) ? requested : -1;
  return static_cast<int64_t>(resolve(-1));
}

}  // namespace aios

TORCH_LIBRARY_FRAGMENT(aios_cpu, m) {
  m.def("qgemm(Tensor x, Tensor codes, Tensor scales, int format, int isa=-1) -> Tensor", &aios::qgemm);
  m.def("qgemm_quantize(Tensor x, int blocks) -> Tensor[]", &aios::qgemm_quantize);
  m.def("qgemm_isa(int requested=-1) -> int", &aios::qgemm_isa);
}

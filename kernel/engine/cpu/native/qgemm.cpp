// torch.ops.aios_cpu.qgemm: y = x Wᵀ with W in a GGUF block format (qgemm.h), x quantized to int8 per 32-block on
// the way in, the same weights for any number of rows:
//   decode (1-8 rows) is a matrix-vector product bound by the weights' bytes: each weight row is read once and
//     multiplied by up to four activation rows while in registers;
//   prompt rows (hundreds) are a blocked product: a tile of kTile weight rows (a few KiB to ~70 KiB, in L1/L2) is
//     multiplied by every group of four activation rows in turn, so the weights cross the memory bus once per call.
// Output rows are split across threads (at::parallel_for, torch's intra-op threads) by tiles of weight rows; every
// output value is one kernel's fixed-order sum, so a row's result does not depend on the other rows or the threads.
// The instruction set is picked at run time (__builtin_cpu_supports), capped by AIOS_QGEMM_ISA=scalar|avx2|avx512.
#include "ops.h"
#include "qgemm.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace aios {
namespace {

using blocks::Acts;
using blocks::Format;
using blocks::Isa;
using blocks::kBlock;
using blocks::kMaxRows;

constexpr int64_t kTile = 16;          // weight rows per task

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
  switch (isa) {
    case Isa::AVX512: return blocks::avx512_kernel(f);
    case Isa::AVX2: return blocks::avx2_kernel(f);
    default: return blocks::scalar_kernel(f);
  }
}

Format check_format(int64_t format) {
  TORCH_CHECK(format >= 0 && format <= static_cast<int64_t>(Format::Q4_1), "unknown block format ", format);
  return static_cast<Format>(format);
}

}  // namespace

// x [T, K] (K a multiple of 32) → its int8 blocks padded to gp blocks: {q int8 [T, gp*32], d [T, gp], s [T, gp],
// d8 [T, gp*8]} (qgemm.h). Per block: d = amax / 127, q = round-half-even(x / d) as x * (1 / d), llama.cpp's q8_0.
std::vector<at::Tensor> qgemm_quantize(const at::Tensor& x, int64_t gp) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) % kBlock == 0, "x must be [T, K] with K a multiple of 32");
  const int64_t T = x.size(0), G = x.size(1) / kBlock;
  TORCH_CHECK(gp >= G, "padding below the input's blocks");
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  auto q = at::zeros({T, gp * kBlock}, x.options().dtype(at::kChar));
  auto d = at::zeros({T, gp}, x.options().dtype(at::kFloat));
  auto s = at::zeros({T, gp}, x.options().dtype(at::kFloat));
  auto d8 = at::zeros({T, gp * 8}, x.options().dtype(at::kFloat));
  const float* xp = xf.data_ptr<float>();
  int8_t* qp = q.data_ptr<int8_t>();
  float *dp = d.data_ptr<float>(), *sp = s.data_ptr<float>(), *d8p = d8.data_ptr<float>();
  at::parallel_for(0, T, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      for (int64_t b = 0; b < G; ++b) {
        const float* v = xp + t * G * kBlock + b * kBlock;
        float amax = 0.f;
        for (int64_t j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(v[j]));
        const float scale = amax / 127.f, inv = scale != 0.f ? 1.f / scale : 0.f;
        int8_t* out = qp + t * gp * kBlock + b * kBlock;
        int32_t sum = 0;
        for (int64_t j = 0; j < kBlock; ++j) {
          const float r = std::nearbyint(v[j] * inv);
          out[j] = static_cast<int8_t>(r);
          sum += static_cast<int32_t>(r);
        }
        dp[t * gp + b] = scale;
        sp[t * gp + b] = scale * static_cast<float>(sum);
        std::fill(d8p + (t * gp + b) * 8, d8p + (t * gp + b + 1) * 8, scale);
      }
    }
  });
  return {q, d, s, d8};
}

// x [T, K] float32/bfloat16/float16; codes and scales as block_weights.py packs them (qgemm.h); format: Format;
// isa: Isa (-1: the best this CPU has, under AIOS_QGEMM_ISA). Returns [T, N] in x's dtype.
at::Tensor qgemm(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales, int64_t format, int64_t isa) {
  const Format f = check_format(format);
  TORCH_CHECK(x.dim() == 2, "x must be [T, K]");
  TORCH_CHECK(codes.dim() == 2 && codes.is_contiguous() && codes.scalar_type() == at::kByte, "codes: [N, bytes] uint8");
  TORCH_CHECK(scales.dim() == 3 && scales.is_contiguous() && scales.scalar_type() == at::kHalf &&
              scales.size(0) == (f == Format::Q4_1 ? 2 : 1) && scales.size(1) == codes.size(0),
              "scales: [1 or 2 (Q4_1), N, blocks] float16");
  const int64_t T = x.size(0), K = x.size(1), N = codes.size(0), gp = scales.size(2);
  const int64_t row_bytes = f == Format::Q8_0 ? gp * kBlock : gp * kBlock / 2;
  TORCH_CHECK(gp % 2 == 0 && codes.size(1) == row_bytes, "codes and scales disagree on the blocks per row");
  TORCH_CHECK(K % kBlock == 0 && K / kBlock <= gp && K / kBlock > gp - 2, "x has ", K, " inputs, the weights ",
              gp * kBlock, " (padded)");
  const blocks::RowKernel kernel = kernel_for(resolve(isa), f);
  auto y = at::empty({T, N}, x.options().dtype(at::kFloat));
  if (T == 0 || N == 0) return y.to(x.scalar_type());
  const std::vector<at::Tensor> acts = qgemm_quantize(x, gp);
  const Acts a{acts[0].data_ptr<int8_t>(), acts[1].data_ptr<float>(), acts[2].data_ptr<float>(),
               acts[3].data_ptr<float>(), gp};
  const uint16_t* sc = reinterpret_cast<const uint16_t*>(scales.data_ptr<at::Half>());
  const blocks::Weights w{codes.data_ptr<uint8_t>(), sc, f == Format::Q4_1 ? sc + N * gp : nullptr, gp, row_bytes};
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, (N + kTile - 1) / kTile, 1, [&](int64_t begin, int64_t end) {
    float out[kMaxRows];
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t n0 = tile * kTile, n1 = std::min(N, n0 + kTile);
      for (int64_t t0 = 0; t0 < T; t0 += kMaxRows) {
        const int64_t rows = std::min(kMaxRows, T - t0);
        for (int64_t n = n0; n < n1; ++n) {
          kernel(w, n, a, t0, rows, out);
          for (int64_t r = 0; r < rows; ++r) yp[(t0 + r) * N + n] = out[r];
        }
      }
    }
  });
  return x.scalar_type() == at::kFloat ? y : y.to(x.scalar_type());
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

// Which kernels a product runs (qgemm_parts.h): the instruction set picked at run time (__builtin_cpu_supports),
// capped by AIOS_QGEMM_ISA=scalar|avx2|avx512, and the weights' tensors checked against the format and the inputs.
#include "qgemm_parts.h"

#include <cstdlib>
#include <cstring>

namespace aios::blocks {
namespace {

// (weights per block, bytes per block) of the raw formats, as GGUF stores them
std::pair<int64_t, int64_t> raw_block(Format f) {
  switch (f) {
    case Format::Q5_0: return {32, 22};
    case Format::Q4_K: return {256, 144};
    case Format::Q5_K: return {256, 176};
    case Format::Q5_1: return {32, 24};
    default: return {256, 210};
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

}  // namespace

bool is_raw(Format f) {
  return f == Format::Q5_0 || f == Format::Q4_K || f == Format::Q6_K || f == Format::Q5_K || f == Format::Q5_1;
}

Format check_format(int64_t format) {
  TORCH_CHECK(format >= 0 && format < kFormats, "unknown block format ", format);
  return static_cast<Format>(format);
}

Weights check_weights(Format f, const at::Tensor& codes, const at::Tensor& scales, int64_t K) {
  TORCH_CHECK(codes.dim() == 2 && codes.is_contiguous() && codes.scalar_type() == at::kByte, "codes: [N, bytes] uint8");
  TORCH_CHECK(K % kBlock == 0, "x has ", K, " inputs, not a multiple of 32");
  const int64_t N = codes.size(0);
  if (is_raw(f)) {
    const auto [per_block, block_bytes] = raw_block(f);
    TORCH_CHECK(K % per_block == 0 && codes.size(1) == K / per_block * block_bytes, "x has ", K,
                " inputs, the weights' rows ", codes.size(1), " bytes of ", block_bytes, "-byte blocks of ",
                per_block);
    return {codes.data_ptr<uint8_t>(), nullptr, nullptr, K / kBlock + (K / kBlock) % 2, codes.size(1)};
  }
  const bool grouped = scales.dim() == 4;
  TORCH_CHECK((scales.dim() == 3 || (grouped && groupable(f))) && scales.is_contiguous() &&
              scales.scalar_type() == at::kHalf && scales.size(0) == (f == Format::Q4_1 ? 2 : 1),
              "scales: [1 or 2 (Q4_1), N, blocks] float16, or [1 or 2, N / 16, blocks, 16] grouped");
  TORCH_CHECK(grouped ? scales.size(1) * kGroupRows == N && scales.size(3) == kGroupRows : scales.size(1) == N,
              "scales for ", grouped ? scales.size(1) * kGroupRows : scales.size(1), " rows, codes for ", N);
  const int64_t gp = scales.size(2), row_bytes = f == Format::Q8_0 ? gp * kBlock : gp * kBlock / 2;
  TORCH_CHECK(gp % 2 == 0 && codes.size(1) == row_bytes, "codes and scales disagree on the blocks per row");
  TORCH_CHECK(K / kBlock <= gp && K / kBlock > gp - 2, "x has ", K, " inputs, the weights ", gp * kBlock, " (padded)");
  const uint16_t* sc = reinterpret_cast<const uint16_t*>(scales.data_ptr<at::Half>());
  return {codes.data_ptr<uint8_t>(), sc, f == Format::Q4_1 ? sc + N * gp : nullptr, gp, row_bytes, grouped};
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

RowKernels kernel_for(Isa isa, Format f) {
  if (is_raw(f)) {
    switch (isa) {
      case Isa::AVX512: return {avx512_raw_kernel(f), nullptr};
      case Isa::AVX2: return {avx2_raw_kernel(f), nullptr};
      default: return {scalar_raw_kernel(f), nullptr};
    }
  }
  switch (isa) {
    case Isa::AVX512: return {avx512_kernel(f), avx512_group_kernel(f)};
    case Isa::AVX2: return {avx2_kernel(f), avx2_group_kernel(f)};
    default: return {scalar_kernel(f), scalar_group_kernel(f)};
  }
}

TileKernel tile_kernel_for(Isa isa, Format f) {
  switch (isa) {
    case Isa::AVX512: return avx512_tile_kernel();
    case Isa::AVX2: return avx2_tile_kernel(f == Format::Q8_0);
    default: return scalar_tile_kernel();
  }
}

}  // namespace aios::blocks

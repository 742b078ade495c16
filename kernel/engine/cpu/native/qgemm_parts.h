// The pieces of the block-quantized product (qgemm.h) that both its callers share: the op (qgemm.cpp, threads from
// at::parallel_for) and the decode layer loop on the worker pool (decode_pool.cpp). Checking the weights, picking the
// instruction set (qgemm_dispatch.cpp), quantizing activation rows, and the two kinds of task a product is split into:
// a tile of kTile weight rows against up to kRowPathRows activation rows (decode), or kTileGroup decoded tiles
// against any number of rows (the blocked product). A task's values are the same whichever thread runs it.
#pragma once

#include "qgemm.h"

#include <immintrin.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

namespace aios::blocks {

constexpr int64_t kTile = 16;          // weight rows per decode task, at least (a multiple of the task size)
constexpr int64_t kMaxTaskRows = 256;  // and at most
constexpr int64_t kRowPathRows = 8;    // up to this many rows, the row kernels (decode)
constexpr int64_t kTileGroup = 4;      // tiles decoded per task of the blocked product (64 weight rows, ~130 KiB at
                                       // 2048 inputs: L2), each group of activation rows applied to all of them

bool is_raw(Format f);
Format check_format(int64_t format);
// The weights of a product with K inputs, checked: codes [N, row bytes] uint8; scales [1 or 2, N, Gp] float16 for the
// packed formats ([1 or 2, N / 16, Gp, 16] when grouped; ignored for the raw ones).
Weights check_weights(Format f, const at::Tensor& codes, const at::Tensor& scales, int64_t K);
bool cpu_has(Isa isa);
Isa resolve(int64_t requested);   // -1: the best this CPU has, under AIOS_QGEMM_ISA
// The decode-row kernels of a product: the row kernel, and the group kernel its grouped weights need.
struct RowKernels {
  RowKernel row;
  GroupKernel group;
};
RowKernels kernel_for(Isa isa, Format f);
TileKernel tile_kernel_for(Isa isa, Format f);

// Row v (any float type) into its int8 blocks, padded to gp blocks (qgemm.h): q [gp*32], d [gp], s [gp], d8 [gp*8],
// h16 [gp*2]. Per block: d = amax / 127, q = round-half-even(x * (1 / d)), llama.cpp's q8_0; h16 the integer sums of
// q over each half.
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

// Quantized activations for up to `rows` rows of up to gp blocks, in one buffer: Acts points into it.
struct ActBuffer {
  std::vector<uint8_t> bytes;
  int8_t* q = nullptr;
  float *d = nullptr, *s = nullptr, *d8 = nullptr;
  int32_t* h16 = nullptr;
  int64_t gp = 0;

  void reserve(int64_t rows, int64_t max_gp) { bytes.resize(rows * max_gp * (kBlock + 12 * sizeof(float)) + 64); }
  // The layout for `gp` blocks per row (at most reserve's), rows of q first (a multiple of 64 bytes: floats aligned).
  Acts layout(int64_t rows, int64_t blocks) {
    gp = blocks;
    uint8_t* base = bytes.data() + (64 - reinterpret_cast<uintptr_t>(bytes.data()) % 64) % 64;
    q = reinterpret_cast<int8_t*>(base);
    d = reinterpret_cast<float*>(base + rows * gp * kBlock);
    s = d + rows * gp;
    d8 = s + rows * gp;
    h16 = reinterpret_cast<int32_t*>(d8 + rows * gp * 8);
    return {q, d, s, d8, h16, gp};
  }
  template <typename T> void quantize(const T* v, int64_t t, int64_t G) { quantize_range(v, t, 0, G, G); }
  // Blocks b0 .. b1 of row t (v its first value) of a row of G blocks; the one that reaches G also writes the padding.
  template <typename T> void quantize_range(const T* v, int64_t t, int64_t b0, int64_t b1, int64_t G) {
    const int64_t at = t * gp + b0;
    quantize_row(v + b0 * kBlock, b1 - b0, (b1 == G ? gp : b1) - b0, q + at * kBlock, d + at, s + at, d8 + at * 8,
                 h16 + at * 2);
  }
};

// Weight rows per decode task of an N-row product at `threads` threads: about four tasks per thread (one that loses
// its core leaves the rest to the others), each a long run of consecutive rows. A thread's hardware prefetcher follows
// a run: with tasks of 16 rows taken in turn by two threads, Q4_0 rows reached 14 GB/s of a 35 GB/s read bandwidth,
// with runs of 128-256 rows 21-22 GB/s (one thread: 12 GB/s either way).
inline int64_t task_rows(int64_t N, int64_t threads) {
  return std::clamp(N / (4 * std::max<int64_t>(threads, 1)) / kTile * kTile, kTile, kMaxTaskRows);
}

// How a product's decode rows are cut into tasks, from AIOS_POOL_TASKS (read at each call, so one process can
// compare): ROWS (the default), task_rows above whatever a row's size; BYTES, about kTaskBytes of weights per task (a
// product with 4x longer rows gets 4x shorter tasks: down's 8192-input rows made its last task, which the other
// threads wait out, 4x o's); GUIDED, BYTES' size while much is left, then shrinking toward the end (each next task
// about 1 / (2 threads) of what is left, at least kTile rows), so the last tasks, and the wait for them, are short.
// ROWS stays the default because the others did not measure faster: quiet AMD EPYC Zen 4, 2 threads, random 1.7B
// Q4_0, pool, batch 1 rows 20.6 / bytes 20.2 / guided 19.8 tok/s, batch 8 44.9 / 45.2 / 45.7 (bench.qgemm_bench --pool).
enum class Split { ROWS, BYTES, GUIDED };
inline Split split_mode() {
  const char* value = std::getenv("AIOS_POOL_TASKS");
  if (value == nullptr) return Split::ROWS;
  if (std::strcmp(value, "guided") == 0) return Split::GUIDED;
  return std::strcmp(value, "bytes") == 0 ? Split::BYTES : Split::ROWS;
}
// Whether a product phase's last tasks read ahead the next product's first ones (prefetch_rows), from
// AIOS_POOL_PREFETCH (read at each call): off unless "1" (not yet measured to help on a quiet machine).
inline bool read_ahead() {
  const char* value = std::getenv("AIOS_POOL_PREFETCH");
  return value != nullptr && std::strcmp(value, "1") == 0;
}
constexpr int64_t kTaskBytes = 288 << 10;   // 256 rows of 2048 Q4_0 inputs: a run the prefetcher follows at full speed

// Weight bytes of one row: its codes and, for the packed formats, its fp16 scales (Q4_1: and mins).
inline int64_t weight_row_bytes(Format f, const Weights& w) {
  return w.row_bytes + (is_raw(f) ? 0 : 2 * w.gp * (w.m != nullptr ? 2 : 1));
}

// Task i covers weight rows starts[i] .. starts[i + 1]; every size a multiple of kTile but the last.
struct TaskPlan {
  std::vector<int64_t> starts;
  int64_t tasks() const { return static_cast<int64_t>(starts.size()) - 1; }
};
inline TaskPlan plan_tasks(int64_t N, int64_t row_bytes, int64_t threads, Split split) {
  threads = std::max<int64_t>(threads, 1);
  int64_t most = task_rows(N, threads);
  if (split != Split::ROWS) most = std::clamp(kTaskBytes / std::max<int64_t>(row_bytes, 1) / kTile * kTile, kTile,
                                              most);
  TaskPlan plan;
  for (int64_t n = 0; n < N;) {
    plan.starts.push_back(n);
    int64_t size = most;
    if (split == Split::GUIDED) size = std::clamp((N - n) / (2 * threads) / kTile * kTile, kTile, most);
    n = std::min(N, n + size);
  }
  plan.starts.push_back(N);
  return plan;
}

// Asks for weight rows n0 .. n1 (codes and scale planes) to be brought into the cache without waiting for them (a
// software prefetch per line): a thread with no task left in a product phase reads ahead what the next product's
// first tasks will read, while the phases between (attention, norms) read no weights.
inline void prefetch_rows(const Weights& w, int64_t n0, int64_t n1) {
  auto ask = [](const void* from, int64_t bytes) {
    const char* p = static_cast<const char*>(from);
    for (int64_t i = 0; i < bytes; i += 64) _mm_prefetch(p + i, _MM_HINT_T1);
  };
  ask(w.codes + n0 * w.row_bytes, (n1 - n0) * w.row_bytes);
  if (w.d != nullptr) ask(w.d + n0 * w.gp, (n1 - n0) * w.gp * 2);
  if (w.m != nullptr) ask(w.m + n0 * w.gp, (n1 - n0) * w.gp * 2);
}

// Weight rows n0 .. n1 against the T activation rows, into y [T, N]; grouped weights a group of kGroupRows rows at a
// time (a task's rows start and end on a group: multiples of kTile, and N a multiple of 16 when grouped).
template <typename T>
void row_range(const RowKernels& kernels, const Weights& w, const Acts& a, int64_t rows, int64_t N, int64_t n0,
               int64_t n1, T* y) {
  static_assert(kTile % kGroupRows == 0, "tasks of whole groups");
  if (w.grouped) {
    float out[kGroupMaxRows * kGroupRows];
    for (int64_t t0 = 0; t0 < rows; t0 += kGroupMaxRows) {
      const int64_t r_count = std::min(kGroupMaxRows, rows - t0);
      for (int64_t g = n0 / kGroupRows; g < n1 / kGroupRows; ++g) {
        kernels.group(w, g, a, t0, r_count, out);
        for (int64_t r = 0; r < r_count; ++r) {
          T* yr = y + (t0 + r) * N + g * kGroupRows;
          for (int64_t i = 0; i < kGroupRows; ++i) yr[i] = static_cast<T>(out[r * kGroupRows + i]);
        }
      }
    }
    return;
  }
  const RowKernel kernel = kernels.row;
  float out[kMaxRows];
  for (int64_t t0 = 0; t0 < rows; t0 += kMaxRows) {
    const int64_t r_count = std::min(kMaxRows, rows - t0);
    for (int64_t n = n0; n < n1; ++n) {
      kernel(w, n, a, t0, r_count, out);
      for (int64_t r = 0; r < r_count; ++r) y[(t0 + r) * N + n] = static_cast<T>(out[r]);
    }
  }
}

// A thread's decoded tiles for the blocked product, for rows of up to g blocks.
struct TileScratch {
  std::vector<uint8_t> codes;
  std::vector<float> floats;
  Tile tiles[kTileGroup];
  int64_t g = -1;

  // Room for rows of `blocks` (allocates only to grow: reserve the largest first), the tiles laid out for them.
  void prepare(int64_t blocks) {
    if (blocks == g) return;
    g = blocks;
    const size_t code_bytes = kTileGroup * g * 8 * kTileN * 4, float_count = kTileGroup * g * 3 * kTileN;
    if (codes.size() < code_bytes) codes.resize(code_bytes);
    if (floats.size() < float_count) floats.resize(float_count);
    for (int64_t j = 0; j < kTileGroup; ++j) {
      float* f = floats.data() + j * g * 3 * kTileN;
      tiles[j] = {codes.data() + j * g * 8 * kTileN * 4, f, f + g * 2 * kTileN, g, 0, false, false};
    }
  }
};

// Blocked task `task`: kTileGroup tiles from weight row task * kTileGroup * kTileN, decoded once into scratch
// (prepared for K / 32 blocks) and multiplied by every group of kTileRows activation rows, into y [T, N].
template <typename T>
void block_task(Format f, TileKernel kernel, const Weights& w, const Acts& a, int64_t rows, int64_t N, int64_t task,
                TileScratch& scratch, T* y) {
  float out[kTileRows * kTileN];
  const int64_t first = task * kTileGroup * kTileN, count = std::min(kTileGroup, (N - first + kTileN - 1) / kTileN);
  for (int64_t j = 0; j < count; ++j) {
    decode_tile(f, w, first + j * kTileN, std::min(kTileN, N - first - j * kTileN), scratch.tiles[j]);
  }
  for (int64_t t0 = 0; t0 < rows; t0 += kTileRows) {   // these rows' activations stay in L1 across the tiles
    const int64_t r_count = std::min(kTileRows, rows - t0);
    for (int64_t j = 0; j < count; ++j) {
      const int64_t n0 = first + j * kTileN, rows_n = std::min(kTileN, N - n0);
      kernel(scratch.tiles[j], a, t0, r_count, out);
      for (int64_t r = 0; r < r_count; ++r) {
        T* yr = y + (t0 + r) * N + n0;
        for (int64_t i = 0; i < rows_n; ++i) yr[i] = static_cast<T>(out[r * kTileN + i]);
      }
    }
  }
}

inline int64_t block_tasks(int64_t N) { return (N + kTileGroup * kTileN - 1) / (kTileGroup * kTileN); }

}  // namespace aios::blocks

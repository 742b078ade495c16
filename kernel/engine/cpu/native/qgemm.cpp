// torch.ops.aios_cpu.qgemm: y = x Wᵀ with W in a GGUF block format (qgemm.h), x quantized to int8 per 32-block on
// the way in, the same weights for any number of rows:
//   decode rows (up to kRowPathRows) are a matrix-vector product bound by the weights' bytes: each weight row is read
//     once and multiplied by up to four activation rows while in registers (qgemm_kernels.cpp for the packed
//     formats, qgemm_raw_kernels*.cpp for the file's Q5_0 / Q4_K / Q6_K blocks);
//   more rows go through the blocked product: kTileGroup tiles of kTileN weight rows are decoded once (qgemm_tile.cpp,
//     ~130 KiB at 2048 inputs, in L2) and multiplied by every group of kTileRows activation rows (read once per group
//     of tiles, from L1) with the rows in the vector lanes (qgemm_tile_kernels.cpp), so the weights cross the memory
//     bus once per call and are unpacked once per call, not once per activation row.
// Output rows are split across threads (at::parallel_for, torch's intra-op threads) by tasks of weight rows
// (qgemm_parts.h), handed out from a shared counter (a thread that loses its core leaves its share to the others);
// every output value is one kernel's fixed-order sum, so a row's result does not depend on the other rows or the
// threads within a path (the decode-row path and the blocked path sum in different orders: results may differ in the
// last float bits between a call of few rows and one of many). The decode layer loop (decode_pool.cpp) runs the same
// tasks on the library's worker pool.
// The instruction set is picked at run time (qgemm_dispatch.cpp), capped by AIOS_QGEMM_ISA=scalar|avx2|avx512.
#include "ops.h"
#include "pool.h"
#include "qgemm_parts.h"

#include <ATen/Parallel.h>

#include <atomic>

namespace aios {
namespace {

using blocks::Acts;
using blocks::Format;
using blocks::Isa;
using blocks::kBlock;

// The tasks 0 .. tasks - 1 on torch's threads, from a shared counter, not split in equal ranges: a decode call lasts
// well under a millisecond, so with equal static ranges a thread that lost its core for one scheduler slice made the
// whole call wait for it (at 2 threads beside other work, decode rows fell to a few percent of the read bandwidth).
template <typename Body>
void shared_tasks(int64_t tasks, Body&& body) {
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min<int64_t>(tasks, at::get_num_threads()), 1, [&](int64_t, int64_t) {
    body([&] { return next.fetch_add(1); });
  });
}

// Decode rows on the library's worker pool (pool.h), as the decode layer loop runs its products: a step's products then
// all run on the same threads, with no OpenMP region left spinning on a core the pool needs.
template <typename T>
class RowJob final : public pool::Job {
 public:
  RowJob(const T* x, int64_t stride, int64_t rows, int64_t G, blocks::ActBuffer& acts, blocks::RowKernels kernel,
         const blocks::Weights& w, int64_t N, const blocks::TaskPlan& plan, T* y)
      : x_(x), stride_(stride), rows_(rows), G_(G), acts_(acts), kernel_(kernel), w_(w), N_(N), plan_(plan), y_(y) {}
  int64_t phases() const override { return 2; }
  int64_t tasks(int64_t phase) const override { return phase == 0 ? rows_ : plan_.tasks(); }
  void run(int64_t phase, int64_t task, int) override {
    if (phase == 0) return acts_.quantize(x_ + task * stride_, task, G_);
    const Acts a{acts_.q, acts_.d, acts_.s, acts_.d8, acts_.h16, acts_.gp};
    blocks::row_range(kernel_, w_, a, rows_, N_, plan_.starts[task], plan_.starts[task + 1], y_);
  }

 private:
  const T* x_;
  int64_t stride_, rows_, G_;
  blocks::ActBuffer& acts_;
  blocks::RowKernels kernel_;
  blocks::Weights w_;
  int64_t N_;
  const blocks::TaskPlan& plan_;
  T* y_;
};

void quantize_rows(const at::Tensor& x, blocks::ActBuffer& acts) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) % kBlock == 0 && x.stride(1) == 1,
              "x must be [T, K], K a multiple of 32, unit stride along K");
  const int64_t T = x.size(0), G = x.size(1) / kBlock, stride = x.stride(0);
  TORCH_CHECK(acts.gp >= G, "padding below the input's blocks");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "qgemm_quantize", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    at::parallel_for(0, T, 16, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) acts.quantize(xp + t * stride, t, G);
    });
  });
}

}  // namespace

// x [T, K] → {q int8 [T, gp*32], d [T, gp], s [T, gp], d8 [T, gp*8], h16 int32 [T, gp*2]}: what qgemm multiplies
// (exposed for tests).
std::vector<at::Tensor> qgemm_quantize(const at::Tensor& x, int64_t gp) {
  const at::Tensor xc = x.dim() == 2 && x.stride(1) == 1 ? x : x.contiguous();
  const int64_t T = x.size(0);
  blocks::ActBuffer acts;
  acts.reserve(T, gp);
  const Acts a = acts.layout(T, gp);
  quantize_rows(xc, acts);
  auto copy = [&](const void* p, int64_t n, at::ScalarType type) {
    return at::from_blob(const_cast<void*>(p), {T, n}, x.options().dtype(type)).clone();
  };
  return {copy(a.q, gp * kBlock, at::kChar), copy(a.d, gp, at::kFloat), copy(a.s, gp, at::kFloat),
          copy(a.d8, gp * 8, at::kFloat), copy(a.h16, gp * 2, at::kInt)};
}

// x [T, K] float32/bfloat16/float16; codes and scales as block_weights.py packs them (qgemm.h; the raw formats: the
// file's bytes, scales ignored); format: Format; isa: Isa (-1: the best this CPU has, under AIOS_QGEMM_ISA).
// Returns [T, N] in x's dtype, each value rounded once. One workspace holds the quantized activations: a decode step
// makes ~4 of these calls per layer, so allocations and dtype conversions around the product are a visible part of a
// small model's step.
at::Tensor qgemm(const at::Tensor& x_in, const at::Tensor& codes, const at::Tensor& scales, int64_t format,
                 int64_t isa) {
  const Format f = blocks::check_format(format);
  TORCH_CHECK(x_in.dim() == 2, "x must be [T, K]");
  const at::Tensor x = x_in.stride(1) == 1 ? x_in : x_in.contiguous();
  const int64_t T = x.size(0), K = x.size(1), N = codes.dim() == 2 ? codes.size(0) : 0;
  const blocks::Weights w = blocks::check_weights(f, codes, scales, K);
  const Isa chosen = blocks::resolve(isa);
  auto y = at::empty({T, N}, x.options());
  if (T == 0 || N == 0) return y;
  blocks::ActBuffer acts;
  acts.reserve(T, w.gp);
  const Acts a = acts.layout(T, w.gp);
  if (T <= blocks::kRowPathRows && pool::use() == pool::Use::ALL) {
    TORCH_CHECK(x.size(1) % kBlock == 0 && x.stride(1) == 1, "x must be [T, K], K a multiple of 32, unit stride");
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, y.scalar_type(), "qgemm_pooled", [&] {
      const int threads = at::get_num_threads();
      const blocks::TaskPlan plan =
          blocks::plan_tasks(N, blocks::weight_row_bytes(f, w), threads, blocks::split_mode());
      RowJob<scalar_t> job(x.data_ptr<scalar_t>(), x.stride(0), T, K / kBlock, acts, blocks::kernel_for(chosen, f), w,
                           N, plan, y.data_ptr<scalar_t>());
      pool::run(job, threads);
    });
    return y;
  }
  quantize_rows(x, acts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, y.scalar_type(), "qgemm", [&] {
    scalar_t* yp = y.data_ptr<scalar_t>();
    if (T > blocks::kRowPathRows) {
      const blocks::TileKernel kernel = blocks::tile_kernel_for(chosen, f);
      const int64_t tasks = blocks::block_tasks(N);
      shared_tasks(tasks, [&](auto claim) {
        blocks::TileScratch scratch;
        scratch.prepare(K / kBlock);
        for (int64_t task = claim(); task < tasks; task = claim()) {
          blocks::block_task(f, kernel, w, a, T, N, task, scratch, yp);
        }
      });
      return;
    }
    const blocks::RowKernels kernel = blocks::kernel_for(chosen, f);
    const blocks::TaskPlan plan =
        blocks::plan_tasks(N, blocks::weight_row_bytes(f, w), at::get_num_threads(), blocks::split_mode());
    const int64_t tasks = plan.tasks();
    shared_tasks(tasks, [&](auto claim) {
      for (int64_t task = claim(); task < tasks; task = claim()) {
        blocks::row_range(kernel, w, a, T, N, plan.starts[task], plan.starts[task + 1], yp);
      }
    });
  });
  return y;
}

// The instruction set qgemm would use for `requested` (-1: automatic), or -1 when this CPU lacks it.
int64_t qgemm_isa(int64_t requested) {
  if (requested >= 0) return requested <= 2 && blocks::cpu_has(static_cast<Isa>(requested)) ? requested : -1;
  return static_cast<int64_t>(blocks::resolve(-1));
}

}  // namespace aios

TORCH_LIBRARY_FRAGMENT(aios_cpu, m) {
  m.def("qgemm(Tensor x, Tensor codes, Tensor scales, int format, int isa=-1) -> Tensor", &aios::qgemm);
  m.def("qgemm_quantize(Tensor x, int blocks) -> Tensor[]", &aios::qgemm_quantize);
  m.def("qgemm_isa(int requested=-1) -> int", &aios::qgemm_isa);
}

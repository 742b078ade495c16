// torch.ops.aios_cpu.pool_profile: the worker pool's opt-in counters (pool.h, Profile; AIOS_POOL_PROFILE=1) as
// tensors, for bench/step_profile.py. Takes the counters of the jobs with `phases` phases and resets them.
#include "pool.h"

#include <torch/extension.h>

#include <vector>

namespace aios {
namespace {

// [tallies [threads, phases, 5] (run ns, wait ns, sleep ns, tasks, sleeps), lags [threads, 2] (start ns, end ns),
// jobs [1]] summed over the jobs; every tensor empty-shaped when profiling is off or no such job ran.
std::vector<at::Tensor> pool_profile(int64_t phases) {
  const pool::Profile profile = pool::take_profile(phases);
  const int64_t threads = profile.threads, count = profile.phases;
  at::Tensor tallies = at::zeros({threads, count, 5}, at::kLong), lags = at::zeros({threads, 2}, at::kLong);
  int64_t* t = tallies.data_ptr<int64_t>();
  for (const pool::Tally& tally : profile.tallies) {
    *t++ = tally.run_ns, *t++ = tally.wait_ns, *t++ = tally.sleep_ns, *t++ = tally.tasks, *t++ = tally.sleeps;
  }
  for (int64_t i = 0; i < threads; ++i) {
    lags[i][0] = profile.start_ns[i];
    lags[i][1] = profile.end_ns[i];
  }
  return {tallies, lags, at::full({1}, profile.jobs, at::kLong)};
}

}  // namespace
}  // namespace aios

TORCH_LIBRARY_FRAGMENT(aios_cpu, m) {
  m.def("pool_profile(int phases) -> Tensor[]", &aios::pool_profile);
}

// The native library's own worker threads, for work whose steps are too short for a fork and join each: a decode step
// is ~9 dependent ops per layer, and an OpenMP region per op (at::parallel_for) paid a barrier and a wake-up per op.
//
// A Job is a sequence of phases, each a number of independent tasks fixed before the job starts. run(job, threads)
// runs it on the calling thread and threads - 1 pool workers together: every thread takes tasks of the current phase
// from a shared counter, and a phase starts once every task of the one before has finished (its outputs are
// complete, and no task still reads what it overwrites). Waiting is on the work, not on the threads: a thread that
// lost its core while holding no task delays no one (the others take its share), and one that holds a task delays
// only that phase's end. Which thread runs a task never changes its result.
//
// Waits spin for a bounded time (AIOS_POOL_SPIN_US, default kSpinUs), then sleep on a futex: a descheduled partner
// never has the others burn a core for long, and an idle pool sleeps. Workers are created on first use, one per thread
// beyond the caller's, and kept for the process (a forked child starts its own). One job runs at a time: a caller that
// finds the pool busy runs its job alone.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

namespace aios::pool {

constexpr int64_t kSpinUs = 50;        // spin before sleeping: covers the gaps between a step's phases
constexpr int kMaxThreads = 256;

class Job {
 public:
  virtual ~Job() = default;
  virtual int64_t phases() const = 0;
  virtual int64_t tasks(int64_t phase) const = 0;   // read once, when the job starts
  // Runs one task; `thread` (0 .. threads - 1) names per-thread scratch. Must not throw: check inputs before run().
  virtual void run(int64_t phase, int64_t task, int thread) = 0;
};

// Which work runs on the pool, from AIOS_NATIVE_POOL (read at each call, so one process can compare): the decode
// layer loop (decode_pool.cpp) unless "0"; qgemm's decode rows (qgemm.cpp) too unless "0" or "layers".
enum class Use { NONE, LAYERS, ALL };
Use use();

// Runs job on the caller (thread 0) and threads - 1 workers (threads clamped to 1..kMaxThreads); returns when every
// task has finished and no worker touches the job any more.
void run(Job& job, int threads);

// Opt-in counters of where a job's time goes (AIOS_POOL_PROFILE=1, read once per process: off, work() reads no clock).
// Per thread and phase: the time running tasks, the time waiting for the phase's other tasks to end (spin and sleep,
// and of it the futex sleeps), the tasks run and the sleeps; per thread and job: how long after the job's start the
// thread began its first phase (a worker's wake-up), and how long after its last phase the job ended for it (the
// caller: waiting for the workers to check out). Jobs are tallied by their phase count, so a step's layer loop and
// qgemm's one-product jobs stay apart; a job that ran alone because the pool was busy is not counted.
struct Tally {
  int64_t run_ns = 0, wait_ns = 0, sleep_ns = 0, tasks = 0, sleeps = 0;
};
struct Profile {
  int64_t jobs = 0, threads = 0, phases = 0;
  std::vector<Tally> tallies;                 // [threads][phases]
  std::vector<int64_t> start_ns, end_ns;      // [threads]
};
bool profiling();
// The counters of the jobs of `phases` phases since the last take (empty when none ran), and resets them.
Profile take_profile(int64_t phases);

}  // namespace aios::pool

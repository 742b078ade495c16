// The worker pool (pool.h): phases of tasks handed out from shared counters, bounded spins, futex sleeps.
//
// Each worker owns a Slot: the caller posts a job to the slots of the workers it wants (state kPosted, a futex wake
// when the worker sleeps), a worker accepts it (kPosted -> kAccepted) and runs every phase, then checks out. When the
// caller's own work is done it withdraws the posts no worker accepted yet (kPosted -> kIdle): a worker still waiting
// for its core then never holds the job's end back, and the caller only waits for workers that did start.
#include "pool.h"

#include <immintrin.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace aios::pool {
namespace {

void futex_wait(std::atomic<int32_t>* word, int32_t expected) {
  syscall(SYS_futex, reinterpret_cast<int32_t*>(word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
}
void futex_wake(std::atomic<int32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<int32_t*>(word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}

int64_t spin_us() {
  const char* value = std::getenv("AIOS_POOL_SPIN_US");
  return value != nullptr && *value != '\0' ? std::max<int64_t>(0, std::atoll(value)) : kSpinUs;
}

// Waits until done(word) holds: spins (pause) up to spin_ns, then sleeps on the word, counted in sleepers so that
// whoever changes the word knows to wake it. The sleeper count and the word are both seq_cst: either the waker sees
// the sleeper, or the sleeper sees the changed word before it sleeps.
template <typename Done>
void wait_on(std::atomic<int32_t>& word, std::atomic<int32_t>& sleepers, int64_t spin_ns, Done done) {
  if (done(word.load(std::memory_order_acquire))) return;
  const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(spin_ns);
  for (int i = 1;; ++i) {
    _mm_pause();
    if (done(word.load(std::memory_order_acquire))) return;
    if (i % 64 == 0 && std::chrono::steady_clock::now() >= until) break;
  }
  for (;;) {
    sleepers.fetch_add(1);
    const int32_t seen = word.load();
    if (!done(seen)) futex_wait(&word, seen);
    sleepers.fetch_sub(1);
    if (done(word.load(std::memory_order_acquire))) return;
  }
}

void bump(std::atomic<int32_t>& word, std::atomic<int32_t>& sleepers, int32_t by) {
  word.fetch_add(by);
  if (sleepers.load() > 0) futex_wake(&word);
}

struct alignas(64) Phase {
  std::atomic<int32_t> next{0};
  std::atomic<int32_t> done{0};
  std::atomic<int32_t> sleepers{0};
  int32_t tasks = 0;
};

// Every phase of the job, in order, on one thread.
void work(Job& job, Phase* phases, int64_t count, int thread, int64_t spin_ns) {
  for (int64_t p = 0; p < count; ++p) {
    Phase& phase = phases[p];
    for (int32_t task = phase.next.fetch_add(1); task < phase.tasks; task = phase.next.fetch_add(1)) {
      job.run(p, task, thread);
      bump(phase.done, phase.sleepers, 1);
    }
    wait_on(phase.done, phase.sleepers, spin_ns, [&](int32_t d) { return d >= phase.tasks; });
  }
}

enum State : int32_t { kIdle = 0, kPosted = 1, kAccepted = 2, kStop = 3 };

struct alignas(64) Slot {
  std::atomic<int32_t> state{kIdle};
  std::atomic<int32_t> sleepers{0};
  Job* job = nullptr;
  Phase* phases = nullptr;
  int64_t count = 0, spin_ns = 0;
  int thread = 0;
};

class Pool {
 public:
  void run(Job& job, int threads) {
    threads = std::max(1, std::min(threads, kMaxThreads));
    const int64_t spin_ns = spin_us() * 1000, count = job.phases();
    std::unique_ptr<Phase[]> phases(new Phase[count]);
    for (int64_t p = 0; p < count; ++p) phases[p].tasks = static_cast<int32_t>(job.tasks(p));
    std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
    if (!lock.owns_lock() || threads == 1) {   // busy with another caller's job, or alone: run it here
      work(job, phases.get(), count, 0, spin_ns);
      return;
    }
    if (pid_ != getpid()) {   // a forked child: the parent's workers are not in this process
      slots_.clear();
      pid_ = getpid();
    }
    while (static_cast<int>(slots_.size()) < threads - 1) spawn();
    for (int i = 0; i < threads - 1; ++i) {
      Slot& slot = *slots_[i];
      slot.job = &job;
      slot.phases = phases.get();
      slot.count = count;
      slot.spin_ns = spin_ns;
      slot.thread = i + 1;
      active_.fetch_add(1);
      slot.state.store(kPosted);
      if (slot.sleepers.load() > 0) futex_wake(&slot.state);
    }
    work(job, phases.get(), count, 0, spin_ns);
    for (int i = 0; i < threads - 1; ++i) {   // withdraw what no worker took up: the work is done without it
      int32_t posted = kPosted;
      if (slots_[i]->state.compare_exchange_strong(posted, kIdle)) active_.fetch_sub(1);
    }
    wait_on(active_, active_sleepers_, spin_ns, [](int32_t a) { return a == 0; });
  }

 private:
  void spawn() {
    slots_.push_back(std::make_unique<Slot>());
    Slot* slot = slots_.back().get();
    std::thread([this, slot] { serve(*slot); }).detach();   // kept for the process, as the pool is
  }

  void serve(Slot& slot) {
    for (;;) {
      // idle: spin the default time (a decode step follows the last closely), then sleep until a post
      wait_on(slot.state, slot.sleepers, spin_us() * 1000, [](int32_t s) { return s != kIdle; });
      int32_t posted = kPosted;
      if (!slot.state.compare_exchange_strong(posted, kAccepted)) continue;   // withdrawn before we woke
      work(*slot.job, slot.phases, slot.count, slot.thread, slot.spin_ns);
      slot.state.store(kIdle);
      bump(active_, active_sleepers_, -1);
    }
  }

  std::mutex mutex_;
  std::vector<std::unique_ptr<Slot>> slots_;
  pid_t pid_ = getpid();
  std::atomic<int32_t> active_{0};
  std::atomic<int32_t> active_sleepers_{0};
};

}  // namespace

Use use() {
  const char* value = std::getenv("AIOS_NATIVE_POOL");
  if (value == nullptr) return Use::ALL;
  if (std::strcmp(value, "0") == 0) return Use::NONE;
  return std::strcmp(value, "layers") == 0 ? Use::LAYERS : Use::ALL;
}

void run(Job& job, int threads) {
  static Pool* pool = new Pool();   // never destroyed: its detached workers may outlive static destruction
  pool->run(job, threads);
}

}  // namespace aios::pool

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
#include <map>
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

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Waits until done(word) holds: spins (pause) up to spin_ns, then sleeps on the word, counted in sleepers so that
// whoever changes the word knows to wake it. The sleeper count and the word are both seq_cst: either the waker sees
// the sleeper, or the sleeper sees the changed word before it sleeps.
template <typename Done>
void wait_on(std::atomic<int32_t>& word, std::atomic<int32_t>& sleepers, int64_t spin_ns, Done done,
             Tally* tally = nullptr) {
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
    if (!done(seen)) {
      const int64_t asleep = tally != nullptr ? now_ns() : 0;
      futex_wait(&word, seen);
      if (tally != nullptr) tally->sleep_ns += now_ns() - asleep, ++tally->sleeps;
    }
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

// Every phase of the job, in order, on one thread; tallies [count] this thread's counters, or null.
void work(Job& job, Phase* phases, int64_t count, int thread, int64_t spin_ns, Tally* tallies) {
  for (int64_t p = 0; p < count; ++p) {
    Phase& phase = phases[p];
    Tally* tally = tallies != nullptr ? tallies + p : nullptr;
    int64_t mark = tally != nullptr ? now_ns() : 0;
    for (int32_t task = phase.next.fetch_add(1); task < phase.tasks; task = phase.next.fetch_add(1)) {
      job.run(p, task, thread);
      bump(phase.done, phase.sleepers, 1);
      if (tally != nullptr) {
        const int64_t now = now_ns();
        tally->run_ns += now - mark, ++tally->tasks, mark = now;
      }
    }
    wait_on(phase.done, phase.sleepers, spin_ns, [&](int32_t d) { return d >= phase.tasks; }, tally);
    if (tally != nullptr) tally->wait_ns += now_ns() - mark;
  }
}

// One job's profile bookkeeping (pool.h, Profile): where each thread's counters go, when it started and finished.
struct Marks {
  Tally* tallies = nullptr;   // [threads][phases], or null when not profiling
  int64_t count = 0, start = 0;
  std::vector<int64_t> started, finished;
  Tally* of(int thread) const { return tallies != nullptr ? tallies + thread * count : nullptr; }
};

enum State : int32_t { kIdle = 0, kPosted = 1, kAccepted = 2, kStop = 3 };

struct alignas(64) Slot {
  std::atomic<int32_t> state{kIdle};
  std::atomic<int32_t> sleepers{0};
  Job* job = nullptr;
  Phase* phases = nullptr;
  Marks* marks = nullptr;
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
    if (!lock.owns_lock()) {   // busy with another caller's job: run it here
      work(job, phases.get(), count, 0, spin_ns, nullptr);
      return;
    }
    Marks marks;
    if (profiling()) {
      Profile& profile = profiles_[count];
      if (profile.threads < threads) {
        profile.threads = threads, profile.phases = count;
        profile.tallies.resize(threads * count);
        profile.start_ns.resize(threads), profile.end_ns.resize(threads);
      }
      ++profile.jobs;
      marks.tallies = profile.tallies.data(), marks.count = count, marks.start = now_ns();
      marks.started.assign(threads, -1), marks.finished.assign(threads, -1);
      marks.started[0] = marks.start;
    }
    if (threads == 1) {   // alone: run it here
      work(job, phases.get(), count, 0, spin_ns, marks.of(0));
      if (marks.tallies != nullptr) marks.finished[0] = now_ns();
      return finish(marks, 1);
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
      slot.marks = &marks;
      active_.fetch_add(1);
      slot.state.store(kPosted);
      if (slot.sleepers.load() > 0) futex_wake(&slot.state);
    }
    work(job, phases.get(), count, 0, spin_ns, marks.of(0));
    if (marks.tallies != nullptr) marks.finished[0] = now_ns();
    for (int i = 0; i < threads - 1; ++i) {   // withdraw what no worker took up: the work is done without it
      int32_t posted = kPosted;
      if (slots_[i]->state.compare_exchange_strong(posted, kIdle)) active_.fetch_sub(1);
    }
    wait_on(active_, active_sleepers_, spin_ns, [](int32_t a) { return a == 0; });
    finish(marks, threads);
  }

  Profile take_profile(int64_t phases) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto found = profiles_.find(phases);
    if (found == profiles_.end()) return {};
    Profile taken = std::move(found->second);
    profiles_.erase(found);
    return taken;
  }

 private:
  // Adds a profiled job's start and end lags to its profile (the workers have checked out: their marks are final).
  void finish(const Marks& marks, int threads) {
    if (marks.tallies == nullptr) return;
    const int64_t end = now_ns();
    Profile& profile = profiles_[marks.count];
    for (int i = 0; i < threads; ++i) {
      if (marks.started[i] < 0) continue;   // a withdrawn post: this worker never joined
      profile.start_ns[i] += marks.started[i] - marks.start;
      profile.end_ns[i] += end - marks.finished[i];
    }
  }

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
      Marks* marks = slot.marks;
      if (marks->tallies != nullptr) marks->started[slot.thread] = now_ns();
      work(*slot.job, slot.phases, slot.count, slot.thread, slot.spin_ns, marks->of(slot.thread));
      if (marks->tallies != nullptr) marks->finished[slot.thread] = now_ns();
      slot.state.store(kIdle);
      bump(active_, active_sleepers_, -1);
    }
  }

  std::mutex mutex_;
  std::vector<std::unique_ptr<Slot>> slots_;
  pid_t pid_ = getpid();
  std::atomic<int32_t> active_{0};
  std::atomic<int32_t> active_sleepers_{0};
  std::map<int64_t, Profile> profiles_;   // by phase count; under mutex_
};

Pool& the_pool() {
  static Pool* pool = new Pool();   // never destroyed: its detached workers may outlive static destruction
  return *pool;
}

}  // namespace

Use use() {
  const char* value = std::getenv("AIOS_NATIVE_POOL");
  if (value == nullptr) return Use::ALL;
  if (std::strcmp(value, "0") == 0) return Use::NONE;
  return std::strcmp(value, "layers") == 0 ? Use::LAYERS : Use::ALL;
}

void run(Job& job, int threads) { the_pool().run(job, threads); }

bool profiling() {
  static const bool on = [] {
    const char* value = std::getenv("AIOS_POOL_PROFILE");
    return value != nullptr && *value != '\0' && std::strcmp(value, "0") != 0;
  }();
  return on;
}

Profile take_profile(int64_t phases) { return the_pool().take_profile(phases); }

}  // namespace aios::pool

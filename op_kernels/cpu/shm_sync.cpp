// Sequence counters of the shared-memory channel (npu_syncbn/shm.py): the
// release store and acquire loads that make one rank's payload visible to the
// others before they read it, on x86 and on Arm (Kunpeng hosts) alike.
// Plain C ABI, loaded with ctypes from the CPU kernel library.
#include <sched.h>
#include <stdint.h>
#include <time.h>

#define NSB_API extern "C" __attribute__((visibility("default")))

namespace {
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

inline double now_s() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
}  // namespace

// Publish: every write of this rank's payload happens-before a peer that
// reads *seq >= value.
NSB_API void nsb_seq_publish(int64_t* seq, int64_t value) { __atomic_store_n(seq, value, __ATOMIC_RELEASE); }

// Wait until seqs[r * stride] >= target for r in [0, n). Spins (pause) for
// the short waits of ranks in step, yields the core for up to 2 ms so that
// ranks sharing cores progress, then sleeps 50 us between looks so that a
// long wait (a slow data loader on one rank) does not burn a core. Returns -1
// once all arrived, else (after timeout_s seconds) the first rank missing.
NSB_API int nsb_seq_wait(const int64_t* seqs, int64_t stride, int n, int64_t target, double timeout_s) {
  const double start = now_s();
  const double deadline = start + timeout_s;
  const timespec nap = {0, 50000};
  double waited = 0;
  for (uint64_t iter = 0;; ++iter) {
    int missing = -1;
    for (int r = 0; r < n; ++r) {
      if (__atomic_load_n(seqs + r * stride, __ATOMIC_ACQUIRE) < target) {
        missing = r;
        break;
      }
    }
    if (missing < 0) return -1;
    if (iter < 4096) {
      cpu_relax();
      continue;
    }
    if ((iter & 63) == 0) {
      const double t = now_s();
      if (t > deadline) return missing;
      waited = t - start;
    }
    if (waited > 2e-3)
      nanosleep(&nap, nullptr);
    else
      sched_yield();
  }
}

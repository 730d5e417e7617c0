// Sequence counters of the shared-memory channel (npu_syncbn/shm.py): the
// release store and acquire loads that make one rank's payload visible to the
// others before they read it, on x86 and on Arm (Kunpeng hosts) alike.
// Plain C ABI, loaded with ctypes from the CPU kernel library.
#include <sched.h>
#include <stdint.h>
#include <time.h>

#include "nsb_api.h"

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

// Nanoseconds this process spent in nsb_seq_wait (all threads).
uint64_t waited_ns = 0;
inline int done_waiting(double start, int rc) {
  __atomic_add_fetch(&waited_ns, (uint64_t)((now_s() - start) * 1e9), __ATOMIC_RELAXED);
  return rc;
}
}  // namespace

// Seconds this process has spent waiting for other ranks at the channel's
// rendezvous since the library was loaded: the part of a synchronized step
// that is the peers' lateness (npu-syncbn-bench reports it per step).
NSB_API void nsb_wait_time(double* seconds) { *seconds = 1e-9 * (double)__atomic_load_n(&waited_ns, __ATOMIC_RELAXED); }

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
    if (missing < 0) return done_waiting(start, -1);
    if (iter < 4096) {
      cpu_relax();
      continue;
    }
    if ((iter & 63) == 0) {
      const double t = now_s();
      if (t > deadline) return done_waiting(start, missing);
      waited = t - start;
    }
    if (waited > 2e-3)
      nanosleep(&nap, nullptr);
    else
      sched_yield();
  }
}

// out[i] = ((rows[0][i] + rows[1][i]) + rows[2][i]) + ... for W rows of n
// float32 values, row r at rows + r * row_stride: the rank order every rank
// uses, so all ranks get the same bits (the channel's float32 all_reduce).
NSB_API void nsb_sum_rows_f32(const float* rows, int64_t row_stride, int W, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = rows[i];
  for (int r = 1; r < W; ++r) {
    const float* row = rows + r * row_stride;
    for (int64_t i = 0; i < n; ++i) out[i] += row[i];
  }
}

// One collective's rendezvous (the protocol is described in npu_syncbn/shm.py).
// heads: W per-rank headers of head_stride int64 each, [seq, nbytes0, code0,
// nbytes1, code1, ...]. This rank's payload for collective k is already in
// slot k % 2; this writes (nbytes, code) into its header, publishes seq = k
// and waits for every rank. Returns NSB_ARRIVED when all ranks arrived with
// the same (nbytes, code), NSB_MISMATCH when they arrived with different
// ones, else (after timeout_s) the first rank missing (>= 0).
NSB_API int nsb_exchange(int64_t* heads, int64_t head_stride, int rank, int W, int64_t k, int64_t nbytes,
                         int64_t code, double timeout_s) {
  const int slot = (int)(k % 2);
  int64_t* mine = heads + rank * head_stride;
  mine[1 + 2 * slot] = nbytes;
  mine[2 + 2 * slot] = code;
  nsb_seq_publish(mine, k);
  const int missing = nsb_seq_wait(heads, head_stride, W, k, timeout_s);
  if (missing >= 0) return missing;
  for (int r = 0; r < W; ++r) {
    const int64_t* head = heads + r * head_stride;
    if (head[1 + 2 * slot] != nbytes || head[2 + 2 * slot] != code) return NSB_MISMATCH;
  }
  return NSB_ARRIVED;
}

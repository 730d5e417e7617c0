// A whole synchronized BatchNorm forward or backward on CPU in one call
// (npu_syncbn/cpu_step.py): the kernels of syncbn_cpu.cpp write this rank's
// payload straight into its slot of the shared-memory channel and read every
// rank's straight from theirs (npu_syncbn/shm.py), so that a step crosses
// from Python into C once per direction instead of a dozen times.
//
// Payloads are those of the op-by-op path over the same channel, so ranks
// may mix the two paths:
//   forward  row, float32: [fingerprint (NSB_FP values) | mean (C) | invstd (C) | count]
//   backward row, float32: [sum_dy (C) | sum_dy_xmu (C)], summed in rank order.
//
// Channel geometry: heads = W headers of head_stride int64; slots = rank 0's
// slot 0; rank r's slot s at slots + r * 2 * slot_bytes + s * slot_bytes.
// k is the collective's sequence number (its slot is k % 2).
#include <stdlib.h>
#include <string.h>

#include "nsb_api.h"

// Results (mirrored in npu_syncbn/cpu_step.py); detail receives the missing
// rank of NSB_STEP_TIMEOUT.
#define NSB_STEP_DONE 0
#define NSB_STEP_TIMEOUT 1         // a rank did not arrive: the channel is unusable
#define NSB_STEP_MISMATCH 2        // ranks sent different sizes or dtypes (every rank sees it)
#define NSB_STEP_FINGERPRINT 3     // ranks synchronize different layers (every rank sees it)
#define NSB_STEP_FAILED_BEFORE -1  // a kernel failed before publishing: nothing was sent
#define NSB_STEP_FAILED_AFTER -2   // a kernel failed after the exchange (out of memory)

#define NSB_FP 4

namespace {
typedef int64_t i64;

char* slot_of(char* slots, i64 slot_bytes, int rank, i64 k) { return slots + rank * 2 * slot_bytes + (k % 2) * slot_bytes; }

// Rendezvous of collective k; NSB_STEP_DONE when every rank sent the same size.
int rendezvous(int64_t* heads, i64 head_stride, int rank, int W, i64 k, i64 nbytes, double timeout_s, i64* detail) {
  const int rc = nsb_exchange(heads, head_stride, rank, W, k, nbytes, /*float32*/ 1, timeout_s);
  if (rc == NSB_ARRIVED) return NSB_STEP_DONE;
  if (rc == NSB_MISMATCH) return NSB_STEP_MISMATCH;
  *detail = rc;
  return NSB_STEP_TIMEOUT;
}
}  // namespace

// Forward of the allgather mode: statistics of x, exchanged, merged (running
// stats updated by momentum), then y = act((x - mean) * invstd * weight + bias
// + residual) (nsb_elemt_act; residual may be NULL, act is ReLU when relu).
// fp0..fp3: this rank's fingerprint; verify: compare every rank's with it.
// out_counts: (W) each rank's count, read from the rows.
NSB_API int nsb_sync_forward(const void* x, void* y, int dtype, int layout, i64 N, i64 C, i64 L, double eps,
                             const float* weight, const float* bias, float* running_mean, float* running_var,
                             double momentum, double fp0, double fp1, double fp2, double fp3, int verify,
                             int64_t* heads, i64 head_stride, char* slots, i64 slot_bytes, int rank, int W, i64 k,
                             double timeout_s, float* out_mean, float* out_invstd, float* out_counts,
                             const void* residual, int relu, int nt, i64* detail) {
  const i64 row = NSB_FP + 2 * C + 1;
  float* own = (float*)slot_of(slots, slot_bytes, rank, k);
  if (nsb_stats(x, dtype, layout, N, C, L, eps, own + NSB_FP, own + NSB_FP + C, nt) != 0) return NSB_STEP_FAILED_BEFORE;
  const float fp[NSB_FP] = {(float)fp0, (float)fp1, (float)fp2, (float)fp3};
  memcpy(own, fp, sizeof fp);
  own[NSB_FP + 2 * C] = (float)(N * L);
  const int rc = rendezvous(heads, head_stride, rank, W, k, 4 * row, timeout_s, detail);
  if (rc != NSB_STEP_DONE) return rc;
  const i64 stride = 2 * slot_bytes / 4;
  const float* rows = (const float*)slot_of(slots, slot_bytes, 0, k);
  for (int r = 0; r < W; ++r) {
    if (verify && memcmp(rows + r * stride, fp, sizeof fp) != 0) return NSB_STEP_FINGERPRINT;
    out_counts[r] = rows[r * stride + NSB_FP + 2 * C];
  }
  if (nsb_gather_merge(rows + NSB_FP, rows + NSB_FP + C, stride, rows + NSB_FP + 2 * C, stride, W, C, eps,
                       running_mean, running_var, momentum, out_mean, out_invstd) != 0)
    return NSB_STEP_FAILED_AFTER;  // (never "no positive count": this rank's N * L > 0)
  if (nsb_elemt_act(x, residual, y, dtype, layout, N, C, L, out_mean, out_invstd, weight, bias, relu, nt) != 0)
    return NSB_STEP_FAILED_AFTER;
  return NSB_STEP_DONE;
}

// Backward: per-channel sums of dy and dy * (x - mean) (and this rank's
// grad_weight, grad_bias), summed over the ranks, then dx with count = the
// global number of elements per channel. y: the output of a ReLU forward
// (NULL without): the gradient through the ReLU is written to dz by the
// reduce pass and is what the elementwise pass reads instead of dy.
NSB_API int nsb_sync_backward(const void* dy, const void* x, void* dx, int dtype, int layout, i64 N, i64 C, i64 L,
                              const float* mean, const float* invstd, const float* weight, double count,
                              int64_t* heads, i64 head_stride, char* slots, i64 slot_bytes, int rank, int W, i64 k,
                              double timeout_s, float* grad_weight, float* grad_bias, const void* y, void* dz, int nt,
                              i64* detail) {
  float* own = (float*)slot_of(slots, slot_bytes, rank, k);
  if (nsb_backward_reduce_relu(dy, y, dz, x, dtype, layout, N, C, L, mean, invstd, own, own + C, grad_weight, grad_bias,
                               nt) != 0)
    return NSB_STEP_FAILED_BEFORE;
  if (y) dy = dz;
  const int rc = rendezvous(heads, head_stride, rank, W, k, 8 * C, timeout_s, detail);
  if (rc != NSB_STEP_DONE) return rc;
  float* sums = (float*)malloc(2 * C * sizeof(float));
  if (!sums) return NSB_STEP_FAILED_AFTER;
  nsb_sum_rows_f32((const float*)slot_of(slots, slot_bytes, 0, k), 2 * slot_bytes / 4, W, 2 * C, sums);
  const int kr = nsb_backward_elemt(dy, x, dx, dtype, layout, N, C, L, mean, invstd, weight, sums, sums + C, count, nt);
  free(sums);
  return kr == 0 ? NSB_STEP_DONE : NSB_STEP_FAILED_AFTER;
}

// Fused CPU kernels of the SyncBatchNorm ops (npu_syncbn/ops/cpu_fast.py loads
// them with ctypes; plain C ABI, no torch headers).
//
// Layouts (the caller derives them from the strides):
//   NCL: input viewed as (N, C, L) contiguous (NCHW, NCDHW, (N, C, L));
//        one "plane" is the L contiguous elements of one (n, c).
//   NLC: channels-last, P rows of C contiguous channels (NHWC, NDHWC, 2-D (N, C)).
// dtype: 0 float32, 1 float16, 2 bfloat16. Arithmetic is float32 per element;
// partial sums of at most ACC elements are float32 (SIMD lanes), everything
// beyond (across chunks, planes, blocks and threads) is double.
//
// stats reads memory once per channel: a head of the channel's data (>= 256
// elements, or 16-128 rows) by a shifted two-pass (its exact mean K, the
// second pass from cache), every later element into shifted sums
// s1 = sum(x - K), s2 = sum((x - K)^2), giving mean K + s1/k and M2 =
// s2 - s1^2/k, merged with the head's by Chan's parallel formula in double:
// no cancellation for a large |mean|. backward_elemt and elemt use the
// (x - mean) form.
//
// Kernel bodies: syncbn_cpu_impl.h (pieces: syncbn_cpu_pieces.h,
// syncbn_cpu_nlc.h). Threads: every entry point takes nt
// (torch.get_num_threads()); the outer loop (planes, rows, or the batch dim
// for reductions) is split with OpenMP.
// Reductions merge per-thread partials in a fixed order.
//
// No -ffast-math: NaN/Inf propagate as IEEE arithmetic says (a NaN in a
// channel makes that channel's mean/var and every output of it NaN).
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>  // masked loads of run tails (AVX2, AVX-512 variants)
#endif

#include "nsb_api.h"

// No floating-point contraction anywhere in this file: g++ contracts a * b + c
// into one FMA by default in C++ (one rounding instead of two) wherever the
// target has FMA, so the AVX2 and AVX-512 builds would round differently from
// the baseline one. With it off, every variant runs the same float32
// operations in the same lanes and order, and results are bitwise identical
// whichever the CPU picks (ranks on different machines agree).
#pragma GCC optimize("fp-contract=off")

// Three builds of the same kernels: the baseline x86-64 one (any machine), one
// for AVX2 + FMA + F16C and one for AVX-512, chosen at run time (no
// -march=native: the library may be built on one machine and run on another).
#define NSB_NS base
#define NSB_LEVEL 0
#include "syncbn_cpu_impl.h"
#undef NSB_LEVEL
#undef NSB_NS

#if defined(__x86_64__) && defined(__GNUC__)
#define NSB_HAVE_AVX2 1
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define NSB_NS avx2
#define NSB_LEVEL 1
#include "syncbn_cpu_impl.h"
#undef NSB_LEVEL
#undef NSB_NS
#pragma GCC pop_options
#endif

// AVX-512 (F/BW/VL/DQ): 16 floats a vector where torch's own kernels also use
// them; the data of one BatchNorm often sits in L3, so width still counts.
// (GCC 9+: older ones lack the vector-width attribute; clang takes AVX2.)
#if defined(NSB_HAVE_AVX2) && !defined(__clang__) && __GNUC__ >= 9
#define NSB_HAVE_AVX512 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c", "prefer-vector-width=512")
#define NSB_NS avx512
#define NSB_LEVEL 2
#include "syncbn_cpu_impl.h"
#undef NSB_LEVEL
#undef NSB_NS
#pragma GCC pop_options
#endif

namespace {
typedef int64_t i64;

// Instruction-set levels: 0 baseline x86-64 (or whatever the compiler targets
// elsewhere), 1 AVX2 + FMA + F16C, 2 AVX-512 (F/BW/VL/DQ).
int best_level() {
  int l = 0;
#ifdef NSB_HAVE_AVX2
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) l = 1;
#ifdef NSB_HAVE_AVX512
  if (l == 1 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    l = 2;
#endif
#endif
  return l;
}

// The variant the kernels run: the best this CPU has until nsb_select_isa
// picks another (cpu_fast.py does so for $NPU_SYNCBN_CPU_ISA).
int selected = -1;

int isa_level() {
  int l = __atomic_load_n(&selected, __ATOMIC_RELAXED);
  if (l < 0) {
    l = best_level();
    __atomic_store_n(&selected, l, __ATOMIC_RELAXED);
  }
  return l;
}

#if defined(NSB_HAVE_AVX512)
#define NSB_DISPATCH(fn, ...) \
  (isa_level() == 2 ? avx512::fn(__VA_ARGS__) : isa_level() == 1 ? avx2::fn(__VA_ARGS__) : base::fn(__VA_ARGS__))
#elif defined(NSB_HAVE_AVX2)
#define NSB_DISPATCH(fn, ...) (isa_level() == 1 ? avx2::fn(__VA_ARGS__) : base::fn(__VA_ARGS__))
#else
#define NSB_DISPATCH(fn, ...) base::fn(__VA_ARGS__)
#endif

inline bool ok_args(int dtype, int layout, i64 N, i64 C, i64 L) {
  return dtype >= 0 && dtype <= 2 && (layout == 0 || layout == 1) && N > 0 && C > 0 && L > 0 && (layout == 0 || L == 1);
}
}  // namespace




// All entry points return 0 on success, -1 on bad arguments, -2 when scratch
// memory could not be allocated (then the caller falls back to aten).
// Shapes: layout 0 (NCL): (N, C, L); layout 1 (NLC): N = P rows, L = 1.

NSB_API int nsb_version(void) { return 1; }

// 1 when built with OpenMP (nt is honoured), 0 when every kernel runs on one thread.
NSB_API int nsb_openmp(void) {
#ifdef _OPENMP
  return 1;
#else
  return 0;
#endif
}

// mean[c] and invstd[c] = 1/sqrt(biased var + eps), float32.
NSB_API int nsb_stats(const void* x, int dtype, int layout, i64 N, i64 C, i64 L, double eps, float* mean, float* invstd,
                      int nt) {
  if (!ok_args(dtype, layout, N, C, L)) return -1;
  return NSB_DISPATCH(run_stats, x, dtype, layout, N, C, L, eps, mean, invstd, nt);
}

// y = (x - mean) * invstd * weight + bias; weight, bias may be NULL.
NSB_API int nsb_elemt(const void* x, void* y, int dtype, int layout, i64 N, i64 C, i64 L, const float* mean,
                      const float* invstd, const float* weight, const float* bias, int nt) {
  return nsb_elemt_act(x, nullptr, y, dtype, layout, N, C, L, mean, invstd, weight, bias, 0, nt);
}

// y = act((x - mean) * invstd * weight + bias + residual), act = ReLU when relu,
// rounded to the dtype after the affine and after the add (as the op path's
// elemt, add_, relu_); residual (x's layout and dtype) may be NULL.
NSB_API int nsb_elemt_act(const void* x, const void* residual, void* y, int dtype, int layout, i64 N, i64 C, i64 L,
                          const float* mean, const float* invstd, const float* weight, const float* bias, int relu,
                          int nt) {
  if (!ok_args(dtype, layout, N, C, L)) return -1;
  base::Buf<float> s(C), b(C);
  if (!s.p || !b.p) return -2;
  for (i64 c = 0; c < C; ++c) {
    s.p[c] = weight ? invstd[c] * weight[c] : invstd[c];
    b.p[c] = bias ? bias[c] : 0.f;
  }
  if (residual || relu)
    return NSB_DISPATCH(run_elemt_act, x, residual, y, dtype, layout, N, C, L, mean, s.p, b.p, relu != 0, nt);
  return NSB_DISPATCH(run_elementwise, false, nullptr, x, y, dtype, layout, N, C, L, nullptr, mean, s.p, b.p, nt);
}

// sum_dy = sum(dy), sum_dy_xmu = sum(dy * (x - mean)) per channel (float32);
// grad_weight = sum_dy_xmu * invstd and grad_bias = sum_dy where not NULL.
NSB_API int nsb_backward_reduce(const void* dy, const void* x, int dtype, int layout, i64 N, i64 C, i64 L,
                                const float* mean, const float* invstd, float* sum_dy, float* sum_dy_xmu,
                                float* grad_weight, float* grad_bias, int nt) {
  return nsb_backward_reduce_relu(dy, nullptr, nullptr, x, dtype, layout, N, C, L, mean, invstd, sum_dy, sum_dy_xmu,
                                  grad_weight, grad_bias, nt);
}

// The same over g = (y <= 0 ? 0 : dy), the gradient through a ReLU whose
// output is y, also written to dz (x's layout and dtype) in the same pass;
// y == NULL: g = dy and dz is not written.
NSB_API int nsb_backward_reduce_relu(const void* dy, const void* y, void* dz, const void* x, int dtype, int layout, i64 N,
                                     i64 C, i64 L, const float* mean, const float* invstd, float* sum_dy,
                                     float* sum_dy_xmu, float* grad_weight, float* grad_bias, int nt) {
  if (!ok_args(dtype, layout, N, C, L) || (y && !dz)) return -1;
  base::Buf<double> a(C), b(C);
  if (!a.p || !b.p) return -2;
  const int rc = NSB_DISPATCH(run_backward_reduce, dy, x, y, dz, dtype, layout, N, C, L, mean, a.p, b.p, nt);
  if (rc != 0) return rc;
  for (i64 c = 0; c < C; ++c) {
    sum_dy[c] = (float)a.p[c];
    sum_dy_xmu[c] = (float)b.p[c];
    if (grad_weight) grad_weight[c] = sum_dy_xmu[c] * invstd[c];
    if (grad_bias) grad_bias[c] = sum_dy[c];
  }
  return 0;
}

// dx = a*dy + b*(x - mean) + shift with a = invstd*w, b = -a*invstd^2*sum_dy_xmu/count,
// shift = -a*sum_dy/count (coefficients in double, rounded to float32); weight may be NULL.
NSB_API int nsb_backward_elemt(const void* dy, const void* x, void* dx, int dtype, int layout, i64 N, i64 C, i64 L,
                               const float* mean, const float* invstd, const float* weight, const float* sum_dy,
                               const float* sum_dy_xmu, double count, int nt) {
  if (!ok_args(dtype, layout, N, C, L)) return -1;
  base::Buf<float> a(C), b(C), sh(C);
  if (!a.p || !b.p || !sh.p) return -2;
  for (i64 c = 0; c < C; ++c) {
    const double s = invstd[c];
    const double ac = weight ? s * (double)weight[c] : s;
    a.p[c] = (float)ac;
    b.p[c] = (float)(-ac * s * s * (double)sum_dy_xmu[c] / count);
    sh.p[c] = (float)(-ac * (double)sum_dy[c] / count);
  }
  return NSB_DISPATCH(run_elementwise, true, dy, x, dx, dtype, layout, N, C, L, a.p, mean, b.p, sh.p, nt);
}

// Merge W ranks' (mean, invstd, count) rows into the global mean and invstd
// (float32 out), in double: var_r = max(invstd_r^-2 - eps, 0), then
// g_mean = sum_r w_r mean_r and g_var = sum_r w_r (var_r + (mean_r - g_mean)^2)
// with w_r = n_r / sum(n) over the ranks with n_r > 0 (an empty rank's row is
// never read, so whatever it holds cannot leak). Row r of mean/invstd starts
// at r * row_stride (columns contiguous); counts[r * count_stride].
// running_mean/running_var (NULL to skip) move toward the batch by momentum:
// r += momentum * (batch - r), running_var toward the unbiased g_var * n / (n - 1).
// Returns -3 when no rank has a positive count.
NSB_API int nsb_gather_merge(const float* mean, const float* invstd, i64 row_stride, const float* counts,
                             i64 count_stride, i64 W, i64 C, double eps, float* running_mean, float* running_var,
                             double momentum, float* out_mean, float* out_invstd) {
  if (W < 1 || C < 1) return -1;
  double total = 0;
  for (i64 r = 0; r < W; ++r)
    if (counts[r * count_stride] > 0) total += counts[r * count_stride];
  if (!(total > 0)) return -3;
  base::Buf<double> m(C), v(C);  // zeroed
  if (!m.p || !v.p) return -2;
  // Rank-outer loops over contiguous channels: no division per element, vectorizable.
  for (i64 r = 0; r < W; ++r) {
    const double n = counts[r * count_stride];
    if (!(n > 0)) continue;
    const double w = n / total;
    const float* mr = mean + r * row_stride;
    for (i64 c = 0; c < C; ++c) m.p[c] += w * (double)mr[c];
  }
  for (i64 r = 0; r < W; ++r) {
    const double n = counts[r * count_stride];
    if (!(n > 0)) continue;
    const double w = n / total;
    const float* mr = mean + r * row_stride;
    const float* sr = invstd + r * row_stride;
    for (i64 c = 0; c < C; ++c) {
      const double s = sr[c];
      double var = 1.0 / (s * s) - eps;
      var = var < 0 ? 0 : var;  // (false for NaN: NaN stays)
      const double d = (double)mr[c] - m.p[c];
      v.p[c] += w * (var + d * d);
    }
  }
  const double unbias = total / (total - 1);
  for (i64 c = 0; c < C; ++c) {
    out_mean[c] = (float)m.p[c];
    out_invstd[c] = (float)(1.0 / sqrt(v.p[c] + eps));
    if (running_mean) running_mean[c] = (float)(running_mean[c] + momentum * (m.p[c] - running_mean[c]));
    if (running_var) running_var[c] = (float)(running_var[c] + momentum * (v.p[c] * unbias - running_var[c]));
  }
  return 0;
}

// The variant the kernels run: 2 AVX-512, 1 AVX2, 0 baseline.
NSB_API int nsb_isa(void) { return isa_level(); }

// The best variant this CPU can run (and this library has).
NSB_API int nsb_isa_best(void) { return best_level(); }

// Runs variant `level` from now on; -1 (nothing changes) when this CPU or
// this build cannot run it. Not meant to be called while kernels run.
NSB_API int nsb_select_isa(int level) {
  if (level < 0 || level > best_level()) return -1;
  __atomic_store_n(&selected, level, __ATOMIC_RELAXED);
  return 0;
}

// The C ABI of the CPU kernel library (libnpu_syncbn_cpu.so), as the
// translation units that call each other see it; npu_syncbn/ops/cpu_fast.py
// declares the same signatures for ctypes. Kernels: syncbn_cpu.cpp; channel
// rendezvous: shm_sync.cpp; fused synchronized step: sync_step.cpp.
#pragma once
#include <stdint.h>

#define NSB_API extern "C" __attribute__((visibility("default")))

// nsb_exchange results besides a missing rank (>= 0).
#define NSB_ARRIVED (-1)
#define NSB_MISMATCH (-2)

NSB_API int nsb_stats(const void* x, int dtype, int layout, int64_t N, int64_t C, int64_t L, double eps, float* mean,
                      float* invstd, int nt);
NSB_API int nsb_elemt(const void* x, void* y, int dtype, int layout, int64_t N, int64_t C, int64_t L,
                      const float* mean, const float* invstd, const float* weight, const float* bias, int nt);
NSB_API int nsb_elemt_act(const void* x, const void* residual, void* y, int dtype, int layout, int64_t N, int64_t C,
                          int64_t L, const float* mean, const float* invstd, const float* weight, const float* bias,
                          int relu, int nt);
NSB_API int nsb_backward_reduce_relu(const void* dy, const void* y, void* dz, const void* x, int dtype, int layout,
                                     int64_t N, int64_t C, int64_t L, const float* mean, const float* invstd,
                                     float* sum_dy, float* sum_dy_xmu, float* grad_weight, float* grad_bias, int nt);
NSB_API int nsb_backward_reduce(const void* dy, const void* x, int dtype, int layout, int64_t N, int64_t C, int64_t L,
                                const float* mean, const float* invstd, float* sum_dy, float* sum_dy_xmu,
                                float* grad_weight, float* grad_bias, int nt);
NSB_API int nsb_backward_elemt(const void* dy, const void* x, void* dx, int dtype, int layout, int64_t N, int64_t C,
                               int64_t L, const float* mean, const float* invstd, const float* weight,
                               const float* sum_dy, const float* sum_dy_xmu, double count, int nt);
NSB_API int nsb_gather_merge(const float* mean, const float* invstd, int64_t row_stride, const float* counts,
                             int64_t count_stride, int64_t W, int64_t C, double eps, float* running_mean,
                             float* running_var, double momentum, float* out_mean, float* out_invstd);
NSB_API void nsb_seq_publish(int64_t* seq, int64_t value);
NSB_API int nsb_seq_wait(const int64_t* seqs, int64_t stride, int n, int64_t target, double timeout_s);
NSB_API int nsb_exchange(int64_t* heads, int64_t head_stride, int rank, int W, int64_t k, int64_t nbytes,
                         int64_t code, double timeout_s);
NSB_API void nsb_wait_time(double* seconds);
NSB_API void nsb_sum_rows_f32(const float* rows, int64_t row_stride, int W, int64_t n, float* out);

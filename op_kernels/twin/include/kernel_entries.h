// Entries of the kernels (op_kernels/kernels/*.cpp: the five ops, their C-last
// forms, the C-last merge batch_norm_sum_rows and the fused-activation entries) as host code calls
// them in the twin, in each kernel's argument order. Shared by the twin's C ABI
// (capi.cpp) and the emulated npu device (npu_syncbn/emulation/csrc/kernels.cpp).
#ifndef NPU_SYNCBN_TWIN_KERNEL_ENTRIES_H
#define NPU_SYNCBN_TWIN_KERNEL_ENTRIES_H

#include "kernel_operator.h"

extern "C" {
void batch_norm_stats(GM_ADDR x, GM_ADDR mean, GM_ADDR invstd, GM_ADDR workspace, GM_ADDR tiling);
void batch_norm_gather_stats_with_counts(GM_ADDR mean, GM_ADDR invstd, GM_ADDR runningMean, GM_ADDR runningVar,
                                         GM_ADDR counts, GM_ADDR meanOut, GM_ADDR invstdOut, GM_ADDR workspace,
                                         GM_ADDR tiling);
void batch_norm_elemt(GM_ADDR x, GM_ADDR weight, GM_ADDR bias, GM_ADDR mean, GM_ADDR invstd, GM_ADDR y,
                      GM_ADDR workspace, GM_ADDR tiling);
void batch_norm_backward_reduce(GM_ADDR dy, GM_ADDR x, GM_ADDR mean, GM_ADDR invstd, GM_ADDR sumDy, GM_ADDR sumDyXmu,
                                GM_ADDR gradWeight, GM_ADDR gradBias, GM_ADDR workspace, GM_ADDR tiling);
void batch_norm_backward_elemt(GM_ADDR dy, GM_ADDR x, GM_ADDR mean, GM_ADDR invstd, GM_ADDR weight, GM_ADDR sumDy,
                               GM_ADDR sumDyXmu, GM_ADDR count, GM_ADDR dx, GM_ADDR workspace, GM_ADDR tiling);
void batch_norm_stats_clast(GM_ADDR x, GM_ADDR mean, GM_ADDR invstd, GM_ADDR workspace, GM_ADDR tiling);
void batch_norm_elemt_clast(GM_ADDR x, GM_ADDR weight, GM_ADDR bias, GM_ADDR mean, GM_ADDR invstd, GM_ADDR y,
                            GM_ADDR workspace, GM_ADDR tiling);
void batch_norm_backward_reduce_clast(GM_ADDR dy, GM_ADDR x, GM_ADDR mean, GM_ADDR sumDy, GM_ADDR sumDyXmu,
                                      GM_ADDR workspace, GM_ADDR tiling);
void batch_norm_backward_elemt_clast(GM_ADDR dy, GM_ADDR x, GM_ADDR mean, GM_ADDR invstd, GM_ADDR weight,
                                     GM_ADDR sumDy, GM_ADDR sumDyXmu, GM_ADDR count, GM_ADDR dx, GM_ADDR workspace,
                                     GM_ADDR tiling);
void batch_norm_elemt_act(GM_ADDR x, GM_ADDR weight, GM_ADDR bias, GM_ADDR mean, GM_ADDR invstd, GM_ADDR residual,
                          GM_ADDR y, GM_ADDR workspace, GM_ADDR tiling);
void batch_norm_elemt_act_clast(GM_ADDR x, GM_ADDR weight, GM_ADDR bias, GM_ADDR mean, GM_ADDR invstd,
                                GM_ADDR residual, GM_ADDR y, GM_ADDR workspace, GM_ADDR tiling);
void batch_norm_backward_reduce_relu(GM_ADDR dy, GM_ADDR y, GM_ADDR x, GM_ADDR mean, GM_ADDR invstd, GM_ADDR sumDy,
                                     GM_ADDR sumDyXmu, GM_ADDR gradWeight, GM_ADDR gradBias, GM_ADDR gradSum,
                                     GM_ADDR workspace, GM_ADDR tiling);
void batch_norm_backward_reduce_relu_clast(GM_ADDR dy, GM_ADDR y, GM_ADDR x, GM_ADDR mean, GM_ADDR sumDy,
                                           GM_ADDR sumDyXmu, GM_ADDR gradSum, GM_ADDR workspace, GM_ADDR tiling);
void batch_norm_sum_rows(GM_ADDR partialDy, GM_ADDR partialXmu, GM_ADDR invstd, GM_ADDR sumDy, GM_ADDR sumDyXmu,
                         GM_ADDR gradWeight, GM_ADDR gradBias, GM_ADDR workspace, GM_ADDR tiling);
}

#endif  // NPU_SYNCBN_TWIN_KERNEL_ENTRIES_H

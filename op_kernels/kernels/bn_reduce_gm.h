/*
 * The GM arguments of batch_norm_backward_reduce, bound once for its row and
 * packed kernels: dy and x (T, n*c*l elements), mean and invstd (float32
 * (C,)), and the outputs outputMask asks for: sum_dy and sum_dy_xmu
 * ((parts, C) partials when channels are cut), grad_weight and grad_bias (C,).
 */
#ifndef NPU_SYNCBN_BN_REDUCE_GM_H
#define NPU_SYNCBN_BN_REDUCE_GM_H

#include "bn_common.h"

namespace bn {

template <typename T>
struct ReduceGm {
    GlobalTensor<T> dy, x;
    GlobalTensor<float> mean, invstd, sumDy, sumDyXmu, gradWeight, gradBias;

    __aicore__ inline void Bind(GM_ADDR dyP, GM_ADDR xP, GM_ADDR meanP, GM_ADDR invstdP, GM_ADDR sumDyP,
                                GM_ADDR sumDyXmuP, GM_ADDR gradWeightP, GM_ADDR gradBiasP, const BnRowTiling& t,
                                uint32_t mask) {
        const uint64_t total = t.n * t.c * t.l;
        dy.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(dyP), total);
        x.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(xP), total);
        mean.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(meanP), t.c);
        invstd.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(invstdP), t.c);
        if (mask & BN_OUT_SUMS) {
            sumDy.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(sumDyP), uint64_t(t.splits) * t.c);
            sumDyXmu.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(sumDyXmuP), uint64_t(t.splits) * t.c);
        }
        if (mask & BN_OUT_GRAD_WEIGHT) gradWeight.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(gradWeightP), t.c);
        if (mask & BN_OUT_GRAD_BIAS) gradBias.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(gradBiasP), t.c);
    }
};

}  // namespace bn

#endif  // NPU_SYNCBN_BN_REDUCE_GM_H

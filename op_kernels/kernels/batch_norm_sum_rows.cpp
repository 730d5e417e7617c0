/*
 * batch_norm_sum_rows: the merge launch of batch_norm_backward_reduce's partials
 * (C-last: one row per core; row layout: one row per part of the channels).
 * Sums the per-core partial rows of sum_dy and sum_dy_xmu (float32 (rows, C))
 * over the rows and writes, as outputMask asks, sum_dy, sum_dy_xmu, grad_bias =
 * sum_dy and grad_weight = sum_dy_xmu * invstd (float32 (C,)).
 *
 * A kernel rather than torch ops on the host side: one launch instead of a sum,
 * a mul and copies per output, the same code in the twin's C ABI and on the
 * device (npu_ops.cpp / the emulated device), and its GM traffic counted by the
 * twin like every other launch. Launched after the partials' kernel on the same
 * stream: stream order is the barrier. Channels are split over cores, at least
 * 128 per core (host/tiling.cpp, BnMergeCores), `chunk` channels at a time;
 * the rows of a chunk move with one strided copy (rowBatch rows), not one
 * copy and one barrier per row.
 */
#include "bn_common.h"

using namespace AscendC;

class KernelBatchNormSumRows {
public:
    __aicore__ inline KernelBatchNormSumRows() {}

    __aicore__ inline void Init(GM_ADDR partialDy, GM_ADDR partialXmu, GM_ADDR invstd, GM_ADDR sumDy, GM_ADDR sumDyXmu,
                                GM_ADDR gradWeight, GM_ADDR gradBias, const BnSumRowsTiling& tiling) {
        t_ = tiling;
        const uint64_t k = GetBlockIdx();
        c0_ = k * t_.chanBase + bn::Min(k, t_.chanRem);
        c1_ = c0_ + t_.chanBase + (k < t_.chanRem ? 1 : 0);
        partialDyGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(partialDy), t_.rows * t_.c);
        partialXmuGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(partialXmu), t_.rows * t_.c);
        invstdGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(invstd), t_.c);
        if (t_.outputMask & BN_OUT_SUMS) {
            sumDyGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(sumDy), t_.c);
            sumDyXmuGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(sumDyXmu), t_.c);
        }
        if (t_.outputMask & BN_OUT_GRAD_WEIGHT) gradWeightGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(gradWeight), t_.c);
        if (t_.outputMask & BN_OUT_GRAD_BIAS) gradBiasGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(gradBias), t_.c);

        const uint32_t chunkBytes = static_cast<uint32_t>(bn::AlignUp(uint64_t(t_.chunk) * sizeof(float), bn::BLOCK_BYTES));
        pipe_.InitBuffer(accDyBuf_, chunkBytes);
        pipe_.InitBuffer(accXmuBuf_, chunkBytes);
        pipe_.InitBuffer(rowDyBuf_, t_.rowBatch * chunkBytes);
        pipe_.InitBuffer(rowXmuBuf_, t_.rowBatch * chunkBytes);
        pipe_.InitBuffer(invstdBuf_, chunkBytes);
    }

    __aicore__ inline void Process() {
        for (uint64_t c = c0_; c < c1_; c += t_.chunk) {
            const uint64_t n = bn::Min(t_.chunk, c1_ - c);
            Sum(c, n);
            Write(c, n);
        }
    }

private:
    // Rows [r0, r0 + rows) x channels [c, c + nc) of a (rows, C) partial table
    // into UB with one strided copy, each row at a 32-byte aligned stride.
    __aicore__ inline void CopyRowsIn(const LocalTensor<float>& dst, const GlobalTensor<float>& src, uint64_t r0,
                                      uint64_t rows, uint64_t c, uint64_t nc) {
        DataCopyExtParams p(static_cast<uint16_t>(rows), static_cast<uint32_t>(nc * sizeof(float)),
                            static_cast<uint32_t>((t_.c - nc) * sizeof(float)), 0, 0);
        const uint8_t right = static_cast<uint8_t>(bn::AlignUp(nc, bn::BLOCK_BYTES / sizeof(float)) - nc);
        DataCopyPadExtParams<float> pad(true, 0, right, 0.0f);  // pad lanes 0: the adds run over whole blocks
        DataCopyPad(dst, src[r0 * t_.c + c], p, pad);
    }

    __aicore__ inline void Sum(uint64_t c, uint64_t nc) {
        const uint64_t stride = bn::AlignUp(nc, bn::BLOCK_BYTES / sizeof(float));
        const int32_t n = static_cast<int32_t>(stride);
        LocalTensor<float> accDy = accDyBuf_.Get<float>();
        LocalTensor<float> accXmu = accXmuBuf_.Get<float>();
        LocalTensor<float> rowDy = rowDyBuf_.Get<float>();
        LocalTensor<float> rowXmu = rowXmuBuf_.Get<float>();
        Duplicate(accDy, 0.0f, n);
        Duplicate(accXmu, 0.0f, n);
        for (uint64_t r0 = 0; r0 < t_.rows; r0 += t_.rowBatch) {
            const uint64_t rows = bn::Min(t_.rowBatch, t_.rows - r0);
            PipeBarrier<PIPE_ALL>();  // the previous batch's Adds have read the row buffers
            CopyRowsIn(rowDy, partialDyGm_, r0, rows, c, nc);
            CopyRowsIn(rowXmu, partialXmuGm_, r0, rows, c, nc);
            PipeBarrier<PIPE_ALL>();
            for (uint64_t r = 0; r < rows; ++r) {
                Add(accDy, accDy, rowDy[r * stride], n);
                Add(accXmu, accXmu, rowXmu[r * stride], n);
            }
        }
        PipeBarrier<PIPE_ALL>();
    }

    __aicore__ inline void Write(uint64_t c, uint64_t nc) {
        LocalTensor<float> accDy = accDyBuf_.Get<float>();
        LocalTensor<float> accXmu = accXmuBuf_.Get<float>();
        if (t_.outputMask & BN_OUT_SUMS) {
            bn::CopyChannelsOut(sumDyGm_, accDy, c, nc);
            bn::CopyChannelsOut(sumDyXmuGm_, accXmu, c, nc);
        }
        if (t_.outputMask & BN_OUT_GRAD_BIAS) bn::CopyChannelsOut(gradBiasGm_, accDy, c, nc);
        if (t_.outputMask & BN_OUT_GRAD_WEIGHT) {
            LocalTensor<float> invstd = invstdBuf_.Get<float>();
            bn::CopyChannelsIn(invstd, invstdGm_, c, nc);
            PipeBarrier<PIPE_ALL>();
            Mul(invstd, invstd, accXmu, static_cast<int32_t>(nc));
            PipeBarrier<PIPE_ALL>();
            bn::CopyChannelsOut(gradWeightGm_, invstd, c, nc);
        }
        PipeBarrier<PIPE_ALL>();
    }

    TPipe pipe_;
    TBuf<QuePosition::VECCALC> accDyBuf_, accXmuBuf_, rowDyBuf_, rowXmuBuf_, invstdBuf_;
    GlobalTensor<float> partialDyGm_, partialXmuGm_, invstdGm_, sumDyGm_, sumDyXmuGm_, gradWeightGm_, gradBiasGm_;
    BnSumRowsTiling t_;
    uint64_t c0_ = 0, c1_ = 0;
};

extern "C" __global__ __aicore__ void batch_norm_sum_rows(GM_ADDR partialDy, GM_ADDR partialXmu, GM_ADDR invstd,
                                                          GM_ADDR sumDy, GM_ADDR sumDyXmu, GM_ADDR gradWeight,
                                                          GM_ADDR gradBias, GM_ADDR workspace, GM_ADDR tiling) {
    (void)workspace;
    BnSumRowsTiling t;
    bn::LoadTiling(t, tiling);
    KernelBatchNormSumRows op;
    op.Init(partialDy, partialXmu, invstd, sumDy, sumDyXmu, gradWeight, gradBias, t);
    op.Process();
}

/*
 * batch_norm_stats on the C-last path: per-core partial statistics of x viewed
 * as (R, C) with C innermost (channels_last, channels_last_3d, 2-D (N, C)).
 * Core k reduces its rows for every channel and writes row k of the float32
 * (blockDim, C) outputs: the mean of its rows and invstd = 1 / sqrt(biased var
 * + eps). The host merges the rows with batch_norm_gather_stats_with_counts
 * (Chan's merge, counts = rows per core): a second launch on the same stream,
 * no barrier (host/tiling.h, BnClastTilingFor).
 *
 * x is read from GM exactly once. Lanes run across channels; each lane sums
 * (x - K) and (x - K)^2 with K the channel's value in the core's first row
 * (shifted sums: no cancellation when |mean| >> std), the rows of the
 * accumulator tiles folded at the end of each channel chunk.
 */
#include "bn_clast.h"

using namespace AscendC;

template <typename T>
class KernelBatchNormStatsClast {
public:
    __aicore__ inline KernelBatchNormStatsClast() {}

    __aicore__ inline void Init(GM_ADDR x, GM_ADDR mean, GM_ADDR invstd, const BnClastStatsTiling& tiling) {
        t_ = tiling.g;
        eps_ = tiling.eps;
        core_ = GetBlockIdx();
        rows_ = bn::CoreRows(t_, core_);
        usedRows_ = bn::Min(t_.tileRows, rows_.count);

        xGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), t_.rows * t_.c);
        meanGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(mean), uint64_t(t_.blockDim) * t_.c);
        invstdGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(invstd), uint64_t(t_.blockDim) * t_.c);

        const uint32_t tileFloats = static_cast<uint32_t>(t_.tileElems * sizeof(float));
        const uint32_t vecBytes = static_cast<uint32_t>(t_.chunkStride * sizeof(float));
        pipe_.InitBuffer(inQueue_, bn::BUFFER_NUM, static_cast<uint32_t>(t_.tileElems * sizeof(T)));
        pipe_.InitBuffer(xfBuf_, tileFloats);
        pipe_.InitBuffer(shiftBuf_, tileFloats);
        pipe_.InitBuffer(sumBuf_, tileFloats);
        pipe_.InitBuffer(sqBuf_, tileFloats);
        pipe_.InitBuffer(meanBuf_, vecBytes);
        pipe_.InitBuffer(tmpBuf_, vecBytes);
        pipe_.InitBuffer(varBuf_, vecBytes);
        pipe_.InitBuffer(onesBuf_, vecBytes);
    }

    __aicore__ inline void Process() {
        for (uint64_t j = 0; j < t_.chunks; ++j) {
            const bn::Chunk ch = bn::ChunkOf<T>(t_, j);
            ReduceChunk(ch);
            WriteChunk(ch);
        }
    }

private:
    __aicore__ inline void ReduceChunk(const bn::Chunk& ch) {
        LocalTensor<float> xf = xfBuf_.Get<float>();
        LocalTensor<float> shift = shiftBuf_.Get<float>();
        LocalTensor<float> sum = sumBuf_.Get<float>();
        LocalTensor<float> sq = sqBuf_.Get<float>();
        const int32_t used = static_cast<int32_t>(bn::Strides(ch, usedRows_) * ch.stride);
        Duplicate(sum, 0.0f, used);
        Duplicate(sq, 0.0f, used);
        for (uint64_t r = 0; r < rows_.count; r += t_.tileRows) {
            const uint64_t rows = bn::Min(t_.tileRows, rows_.count - r);
            bn::EnQueRows(inQueue_, xGm_, t_, ch, rows_.begin + r, rows);
            const int32_t elems = bn::Lanes(ch, rows);
            bn::DeQueToFloat<T>(xf, inQueue_, elems);
            if (r == 0) bn::BroadcastRows(shift, xf, ch, usedRows_);  // K = the first row
            Sub(xf, xf, shift, elems);
            Add(sum, sum, xf, elems);
            Mul(xf, xf, xf, elems);
            Add(sq, sq, xf, elems);
        }
        bn::FoldRows(sum, ch, usedRows_);
        bn::FoldRows(sq, ch, usedRows_);
    }

    // mean = K + s1 / n, var = (s2 - s1 * s1 / n) / n (>= 0), invstd; row core_ of the outputs.
    __aicore__ inline void WriteChunk(const bn::Chunk& ch) {
        const int32_t n = static_cast<int32_t>(ch.stride);
        const float inv = 1.0f / static_cast<float>(rows_.count);
        LocalTensor<float> sum = sumBuf_.Get<float>();
        LocalTensor<float> mean = meanBuf_.Get<float>();
        LocalTensor<float> tmp = tmpBuf_.Get<float>();
        LocalTensor<float> var = varBuf_.Get<float>();
        Muls(tmp, sum, inv, n);
        Add(mean, shiftBuf_.Get<float>(), tmp, n);
        Mul(tmp, tmp, sum, n);
        Sub(var, sqBuf_.Get<float>(), tmp, n);
        Muls(var, var, inv, n);
        Maxs(var, var, 0.0f, n);
        bn::InvStdInPlace(var, onesBuf_.Get<float>(), eps_, n);
        PipeBarrier<PIPE_ALL>();
        bn::CopyChannelsOut(meanGm_, mean, core_ * t_.c + ch.c0, ch.len);
        bn::CopyChannelsOut(invstdGm_, var, core_ * t_.c + ch.c0, ch.len);
        PipeBarrier<PIPE_ALL>();
    }

    TPipe pipe_;
    TQue<QuePosition::VECIN, bn::BUFFER_NUM> inQueue_;
    TBuf<QuePosition::VECCALC> xfBuf_, shiftBuf_, sumBuf_, sqBuf_, meanBuf_, tmpBuf_, varBuf_, onesBuf_;
    GlobalTensor<T> xGm_;
    GlobalTensor<float> meanGm_, invstdGm_;
    BnClastTiling t_;
    float eps_ = 0.0f;
    uint64_t core_ = 0, usedRows_ = 0;
    bn::RowRange rows_;
};

extern "C" __global__ __aicore__ void batch_norm_stats_clast(GM_ADDR x, GM_ADDR mean, GM_ADDR invstd,
                                                             GM_ADDR workspace, GM_ADDR tiling) {
    (void)workspace;  // the partial rows are outputs of their own; merged by a second launch
    BnClastStatsTiling t;
    bn::LoadTiling(t, tiling);
    bn::RunForDtype<KernelBatchNormStatsClast>(t.g.dtype, x, mean, invstd, t);
}

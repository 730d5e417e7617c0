/*
 * batch_norm_backward_reduce on the C-last path: per-core partial sums of dy,
 * x viewed as (R, C) with C innermost. Core k writes row k of the float32
 * (blockDim, C) outputs: sum(dy) and sum(dy * (x - mean)) over its rows. The
 * host sums the rows (and forms grad_weight / grad_bias) with batch_norm_sum_rows,
 * a second launch on the same stream: no barrier (host/tiling.h, BnClastTilingFor).
 *
 * batch_norm_backward_reduce_relu_clast gates dy by ReLU's mask from the
 * forward output y first and writes that grad_sum (as the row kernel does).
 *
 * dy and x (and y) are each read from GM once; lanes run across channels, the
 * accumulator tiles are folded over their rows at the end of each chunk.
 */
#include "bn_clast.h"

using namespace AscendC;

template <typename T>
class KernelBatchNormBackwardReduceClast {
public:
    __aicore__ inline KernelBatchNormBackwardReduceClast() {}

    __aicore__ inline void Init(GM_ADDR dy, GM_ADDR y, GM_ADDR x, GM_ADDR mean, GM_ADDR sumDy, GM_ADDR sumDyXmu,
                                GM_ADDR gradSum, const BnClastBackwardReduceTiling& tiling, bool fused) {
        t_ = tiling.g;
        relu_ = fused;
        core_ = GetBlockIdx();
        rows_ = bn::CoreRows(t_, core_);
        usedRows_ = bn::Min(t_.tileRows, rows_.count);

        const uint64_t total = t_.rows * t_.c;
        const uint64_t partials = uint64_t(t_.blockDim) * t_.c;
        dyGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(dy), total);
        xGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), total);
        meanGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(mean), t_.c);
        sumDyGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(sumDy), partials);
        sumDyXmuGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(sumDyXmu), partials);

        const uint32_t tileT = static_cast<uint32_t>(t_.tileElems * sizeof(T));
        const uint32_t tileFloats = static_cast<uint32_t>(t_.tileElems * sizeof(float));
        pipe_.InitBuffer(dyQueue_, bn::BUFFER_NUM, tileT);
        pipe_.InitBuffer(xQueue_, bn::BUFFER_NUM, tileT);
        pipe_.InitBuffer(dyfBuf_, tileFloats);
        pipe_.InitBuffer(xfBuf_, tileFloats);
        pipe_.InitBuffer(meanTile_, tileFloats);
        const uint32_t strideFloats = static_cast<uint32_t>(t_.chunkStride * sizeof(float));
        pipe_.InitBuffer(accDyBuf_, strideFloats);
        pipe_.InitBuffer(accXmuBuf_, strideFloats);
        pipe_.InitBuffer(meanBuf_, strideFloats);
        if (relu_) reluGate_.Init(pipe_, y, gradSum, total, t_.tileElems, tiling.act.gateElems);
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
        LocalTensor<float> dyf = dyfBuf_.Get<float>();
        LocalTensor<float> xf = xfBuf_.Get<float>();
        LocalTensor<float> meanT = meanTile_.Get<float>();
        LocalTensor<float> accDy = accDyBuf_.Get<float>();
        LocalTensor<float> accXmu = accXmuBuf_.Get<float>();
        bn::CopyChannelsIn(meanBuf_.Get<float>(), meanGm_, ch.c0, ch.len);
        PipeBarrier<PIPE_ALL>();
        bn::BroadcastRows(meanT, meanBuf_.Get<float>(), ch, usedRows_);
        Duplicate(accDy, 0.0f, static_cast<int32_t>(ch.stride));
        Duplicate(accXmu, 0.0f, static_cast<int32_t>(ch.stride));
        for (uint64_t r = 0; r < rows_.count; r += t_.tileRows) {
            const uint64_t rows = bn::Min(t_.tileRows, rows_.count - r);
            bn::EnQueRows(dyQueue_, dyGm_, t_, ch, rows_.begin + r, rows);
            bn::EnQueRows(xQueue_, xGm_, t_, ch, rows_.begin + r, rows);
            if (relu_) bn::EnQueRows(reluGate_.yQueue, reluGate_.yGm, t_, ch, rows_.begin + r, rows);
            const int32_t elems = bn::Lanes(ch, rows);
            bn::DeQueToFloat<T>(dyf, dyQueue_, elems);
            if (relu_) {
                reluGate_.Apply(dyf, elems);
                bn::DeQueRowsOut(reluGate_.gradSumGm, reluGate_.gradSumQueue, t_, ch, rows_.begin + r, rows);
            }
            bn::DeQueToFloat<T>(xf, xQueue_, elems);
            Sub(xf, xf, meanT, elems);  // sum of dy * (x - mean), never dy * x - mean * dy
            Mul(xf, xf, dyf, elems);
            // Each tile folded into one stride and added there: accumulators of
            // one stride leave the UB to the tiles (fewer, longer copies).
            const int32_t lanes = bn::FoldStrides(dyf, ch, elems);
            bn::FoldStrides(xf, ch, elems);
            Add(accDy, accDy, dyf, lanes);
            Add(accXmu, accXmu, xf, lanes);
        }
        bn::FoldRows(accDy, ch, ch.group);  // the packed group rows of the stride, if any
        bn::FoldRows(accXmu, ch, ch.group);
    }

    __aicore__ inline void WriteChunk(const bn::Chunk& ch) {
        PipeBarrier<PIPE_ALL>();
        bn::CopyChannelsOut(sumDyGm_, accDyBuf_.Get<float>(), core_ * t_.c + ch.c0, ch.len);
        bn::CopyChannelsOut(sumDyXmuGm_, accXmuBuf_.Get<float>(), core_ * t_.c + ch.c0, ch.len);
        PipeBarrier<PIPE_ALL>();
    }

    TPipe pipe_;
    TQue<QuePosition::VECIN, bn::BUFFER_NUM> dyQueue_, xQueue_;
    TBuf<QuePosition::VECCALC> dyfBuf_, xfBuf_, meanTile_, accDyBuf_, accXmuBuf_, meanBuf_;
    bn::ReluGradGate<T> reluGate_;
    GlobalTensor<T> dyGm_, xGm_;
    GlobalTensor<float> meanGm_, sumDyGm_, sumDyXmuGm_;
    BnClastTiling t_;
    uint64_t core_ = 0, usedRows_ = 0;
    bool relu_ = false;
    bn::RowRange rows_;
};

extern "C" __global__ __aicore__ void batch_norm_backward_reduce_clast(GM_ADDR dy, GM_ADDR x, GM_ADDR mean,
                                                                       GM_ADDR sumDy, GM_ADDR sumDyXmu,
                                                                       GM_ADDR workspace, GM_ADDR tiling) {
    (void)workspace;  // the partial rows are outputs of their own; merged by a second launch
    BnClastBackwardReduceTiling t;
    bn::LoadTiling(t, tiling);
    bn::RunForDtype<KernelBatchNormBackwardReduceClast>(t.g.dtype, dy, bn::NoGm(), x, mean, sumDy, sumDyXmu,
                                                        bn::NoGm(), t, false);
}

extern "C" __global__ __aicore__ void batch_norm_backward_reduce_relu_clast(GM_ADDR dy, GM_ADDR y, GM_ADDR x,
                                                                            GM_ADDR mean, GM_ADDR sumDy,
                                                                            GM_ADDR sumDyXmu, GM_ADDR gradSum,
                                                                            GM_ADDR workspace, GM_ADDR tiling) {
    (void)workspace;
    BnClastBackwardReduceTiling t;
    bn::LoadTiling(t, tiling);
    bn::RunForDtype<KernelBatchNormBackwardReduceClast>(t.g.dtype, dy, y, x, mean, sumDy, sumDyXmu, gradSum, t, true);
}

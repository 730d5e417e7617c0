/*
 * batch_norm_backward_reduce: per channel of dy, x viewed as (N, C, L):
 *   sum_dy = sum(dy), sum_dy_xmu = sum(dy * (x - mean)),
 *   grad_weight = sum_dy_xmu * invstd, grad_bias = sum_dy,
 * each written only when asked for (outputMask). mean, invstd and every output
 * are float32 (C,); the sums run in float32 per UB lane.
 *
 * batch_norm_backward_reduce_relu, the fused activation's backward, first
 * gates dy by ReLU's mask from the forward output y: grad_sum = dy where
 * y > 0 (or NaN), else 0 (threshold_backward at 0). It writes grad_sum, x's
 * dtype and layout, for backward_elemt and the residual's gradient, and reduces
 * grad_sum in place of dy.
 *
 * dy and x (and y) are each read from GM once. Each (part, channel) unit is
 * reduced by one core (include/batch_norm_tiling.h). With the tiling's
 * splits > 1 the sums are (splits, C) partials (outputMask: sums only), which
 * the host adds up with batch_norm_sum_rows, a second launch on the same stream.
 */
#include "bn_common.h"
#include "batch_norm_backward_reduce_packed.h"
#include "bn_reduce_gm.h"

using namespace AscendC;

struct BnGradSums {
    float sumDy;
    float sumDyXmu;
};

template <typename T>
class KernelBatchNormBackwardReduce {
public:
    __aicore__ inline KernelBatchNormBackwardReduce() {}

    __aicore__ inline void Init(GM_ADDR dy, GM_ADDR y, GM_ADDR x, GM_ADDR mean, GM_ADDR invstd, GM_ADDR sumDy,
                                GM_ADDR sumDyXmu, GM_ADDR gradWeight, GM_ADDR gradBias, GM_ADDR gradSum,
                                const BnBackwardReduceTiling& tiling, bool fused) {
        t_ = tiling.rows;
        mask_ = tiling.outputMask;
        relu_ = fused;
        units_ = bn::CoreUnits(t_, GetBlockIdx());

        gm_.Bind(dy, x, mean, invstd, sumDy, sumDyXmu, gradWeight, gradBias, t_, mask_);

        const uint32_t tileT = static_cast<uint32_t>(t_.tileElems * sizeof(T));
        const uint32_t tileFloats = static_cast<uint32_t>(t_.tileElems * sizeof(float));
        const uint32_t rowFloats = static_cast<uint32_t>(t_.tileStride * sizeof(float));
        const uint32_t chunkBytes = static_cast<uint32_t>(bn::AlignUp(t_.paramChunk * sizeof(float), bn::BLOCK_BYTES));
        pipe_.InitBuffer(dyQueue_, bn::BUFFER_NUM, tileT);
        pipe_.InitBuffer(xQueue_, bn::BUFFER_NUM, tileT);
        // Rows of BN_WIDE_ROW_BYTES or more (never fused: dy is gated a tile at a time by
        // bn::ReluGradGate) are widened a row at a time (host/tiling.cpp WidensRows).
        byRow_ = !relu_ && t_.l * sizeof(T) >= BN_WIDE_ROW_BYTES;
        pipe_.InitBuffer(dyfBuf_, byRow_ ? rowFloats : tileFloats);
        pipe_.InitBuffer(xfBuf_, byRow_ ? rowFloats : tileFloats);
        pipe_.InitBuffer(accDyBuf_, rowFloats);
        pipe_.InitBuffer(accXmuBuf_, rowFloats);
        pipe_.InitBuffer(workBuf_, t_.reduceWorkElems * sizeof(float));
        pipe_.InitBuffer(resBuf_, t_.reduceWorkElems * sizeof(float));
        pipe_.InitBuffer(res2Buf_, t_.reduceWorkElems * sizeof(float));
        pipe_.InitBuffer(meanBuf_, chunkBytes);
        pipe_.InitBuffer(invstdBuf_, chunkBytes);
        pipe_.InitBuffer(sumDyOutBuf_, chunkBytes);
        pipe_.InitBuffer(sumXmuOutBuf_, chunkBytes);
        if (relu_) reluGate_.Init(pipe_, y, gradSum, t_.n * t_.c * t_.l, t_.tileElems, tiling.act.gateElems);
    }

    // Reduce each of the core's (part, channel) units; stage its sums at output entry u.
    __aicore__ inline void Process() {
        windowBegin_ = windowSize_ = windowCount_ = 0;
        if (units_.begin < units_.end) CopyIn(bn::TileOfItem<T>(t_, bn::ItemsOfUnit(t_, units_.begin).begin));
        for (uint64_t u = units_.begin; u < units_.end; ++u) {
            const float mean = MeanOf(bn::ChannelOfUnit(t_, u), u);
            Stage(u, ReduceChannel(u, mean));
        }
        Flush();
    }

private:
    // mean[c] from the UB window of channels (loaded paramChunk at a time, up to
    // the core's last unit or the part's last channel). The window of staged
    // sums starts at the same channel of unit u's part.
    __aicore__ inline float MeanOf(uint64_t c, uint64_t u) {
        if (windowSize_ == 0 || c < windowBegin_ || c >= windowBegin_ + windowSize_) {
            Flush();
            windowBegin_ = c;
            windowOut_ = u;
            windowSize_ = bn::Min(bn::Min(t_.paramChunk, t_.c - c), units_.end - u);
            bn::CopyChannelsIn(meanBuf_.Get<float>(), gm_.mean, c, windowSize_);
            bn::CopyChannelsIn(invstdBuf_.Get<float>(), gm_.invstd, c, windowSize_);
            PipeBarrier<PIPE_ALL>();
        }
        return meanBuf_.Get<float>().GetValue(c - windowBegin_);
    }

    // Unit u's tiles, each tile row added into one row of lanes (count = its
    // length: pad lanes never join); the first was copied in ahead, and each
    // tile's successor (bn::NextItem) is copied in before the tile is computed.
    __aicore__ inline BnGradSums ReduceChannel(uint64_t u, float mean) {
        const bn::ItemRange items = bn::ItemsOfUnit(t_, u);
        LocalTensor<float> accDy = accDyBuf_.Get<float>();
        LocalTensor<float> accXmu = accXmuBuf_.Get<float>();
        Duplicate(accDy, 0.0f, static_cast<int32_t>(t_.tileStride));
        Duplicate(accXmu, 0.0f, static_cast<int32_t>(t_.tileStride));
        uint64_t lanes = 0;
        for (uint64_t item = items.begin; item < items.end; ++item) {
            const bn::Tile tile = bn::TileOfItem<T>(t_, item);
            uint64_t next = 0;
            if (bn::NextItem(t_, units_, u, item, next)) CopyIn(bn::TileOfItem<T>(t_, next));
            if (byRow_) {
                RowByRow(tile, mean);
            } else {
                WholeTile(tile, mean);
            }
            lanes = bn::Max(lanes, tile.len);
        }
        BnGradSums s;
        bn::SumLanes2(accDy, accXmu, lanes, resBuf_.Get<float>(), res2Buf_.Get<float>(), workBuf_.Get<float>(), s.sumDy,
                      s.sumDyXmu);
        return s;
    }

    // A tile widened whole (fused: dy gated by y's mask and written out as
    // grad_sum), then each row added into the accumulators.
    __aicore__ inline void WholeTile(const bn::Tile& tile, float mean) {
        LocalTensor<float> dyf = dyfBuf_.Get<float>(), xf = xfBuf_.Get<float>();
        const int32_t elems = static_cast<int32_t>(tile.rows * tile.stride), len = static_cast<int32_t>(tile.len);
        bn::DeQueToFloat<T>(dyf, dyQueue_, elems);
        if (relu_) {
            reluGate_.Apply(dyf, elems);
            bn::DeQueTileOut(reluGate_.gradSumGm, reluGate_.gradSumQueue, t_, tile);
        }
        bn::DeQueToFloat<T>(xf, xQueue_, elems);
        Adds(xf, xf, -mean, elems);
        Mul(xf, xf, dyf, elems);
        for (uint64_t r = 0; r < tile.rows; ++r) {
            Add(accDyBuf_.Get<float>(), accDyBuf_.Get<float>(), dyf[r * tile.stride], len);
            Add(accXmuBuf_.Get<float>(), accXmuBuf_.Get<float>(), xf[r * tile.stride], len);
        }
    }

    // A tile a row at a time from the queued tiles of T (float input is read
    // where it landed: no widening copy).
    __aicore__ inline void RowByRow(const bn::Tile& tile, float mean) {
        LocalTensor<float> dyf = dyfBuf_.Get<float>(), xf = xfBuf_.Get<float>();
        LocalTensor<float> accDy = accDyBuf_.Get<float>(), accXmu = accXmuBuf_.Get<float>();
        LocalTensor<T> dy = dyQueue_.template DeQue<T>(), x = xQueue_.template DeQue<T>();
        const int32_t len = static_cast<int32_t>(tile.len);
        for (uint64_t r = 0; r < tile.rows; ++r) {
            const LocalTensor<float> dyRow = bn::AsFloat(dyf, dy[r * tile.stride], len);
            bn::AddsAsFloat(xf, x[r * tile.stride], -mean, len);
            Mul(xf, xf, dyRow, len);
            Add(accDy, accDy, dyRow, len);
            Add(accXmu, accXmu, xf, len);
        }
        dyQueue_.FreeTensor(dy);
        xQueue_.FreeTensor(x);
    }

    __aicore__ inline void CopyIn(const bn::Tile& tile) {
        bn::EnQueTile(dyQueue_, gm_.dy, t_, tile);
        bn::EnQueTile(xQueue_, gm_.x, t_, tile);
        if (relu_) bn::EnQueTile(reluGate_.yQueue, reluGate_.yGm, t_, tile);
    }

    __aicore__ inline void Stage(uint64_t u, const BnGradSums& s) {
        sumDyOutBuf_.Get<float>().SetValue(u - windowOut_, s.sumDy);
        sumXmuOutBuf_.Get<float>().SetValue(u - windowOut_, s.sumDyXmu);
        windowCount_ = u - windowOut_ + 1;
    }

    // Writes the staged window: the sums, grad_bias = sum_dy, grad_weight = sum_dy_xmu * invstd
    // (the last two only with one part, when output entries are channels).
    __aicore__ inline void Flush() {
        if (windowCount_ == 0) return;
        LocalTensor<float> sumDy = sumDyOutBuf_.Get<float>();
        LocalTensor<float> sumXmu = sumXmuOutBuf_.Get<float>();
        PipeBarrier<PIPE_ALL>();
        if (mask_ & BN_OUT_SUMS) {
            bn::CopyChannelsOut(gm_.sumDy, sumDy, windowOut_, windowCount_);
            bn::CopyChannelsOut(gm_.sumDyXmu, sumXmu, windowOut_, windowCount_);
        }
        if (mask_ & BN_OUT_GRAD_BIAS) bn::CopyChannelsOut(gm_.gradBias, sumDy, windowBegin_, windowCount_);
        if (mask_ & BN_OUT_GRAD_WEIGHT) {
            LocalTensor<float> invstd = invstdBuf_.Get<float>();
            PipeBarrier<PIPE_ALL>();
            Mul(invstd, invstd, sumXmu, static_cast<int32_t>(windowCount_));
            PipeBarrier<PIPE_ALL>();
            bn::CopyChannelsOut(gm_.gradWeight, invstd, windowBegin_, windowCount_);
        }
        PipeBarrier<PIPE_ALL>();
        windowCount_ = 0;
    }

    TPipe pipe_;
    TQue<QuePosition::VECIN, bn::BUFFER_NUM> dyQueue_, xQueue_;
    TBuf<QuePosition::VECCALC> dyfBuf_, xfBuf_, accDyBuf_, accXmuBuf_, workBuf_, resBuf_, res2Buf_;
    bn::ReluGradGate<T> reluGate_;
    TBuf<QuePosition::VECCALC> meanBuf_, invstdBuf_, sumDyOutBuf_, sumXmuOutBuf_;
    bn::ReduceGm<T> gm_;
    BnRowTiling t_;
    uint32_t mask_ = 0;
    bool relu_ = false, byRow_ = false;
    uint64_t windowBegin_ = 0, windowOut_ = 0, windowSize_ = 0, windowCount_ = 0;
    bn::ItemRange units_;
};

extern "C" __global__ __aicore__ void batch_norm_backward_reduce(GM_ADDR dy, GM_ADDR x, GM_ADDR mean, GM_ADDR invstd,
                                                                 GM_ADDR sumDy, GM_ADDR sumDyXmu, GM_ADDR gradWeight,
                                                                 GM_ADDR gradBias, GM_ADDR workspace, GM_ADDR tiling) {
    // workspace: the packed kernel's per-core rows; cut channels' partials are outputs of their own
    BnBackwardReduceTiling t;
    bn::LoadTiling(t, tiling);
    if (t.rows.packGroup) {
        bn::RunForDtype<KernelBatchNormBackwardReducePacked>(t.rows.dtype, dy, x, mean, invstd, sumDy, sumDyXmu,
                                                             gradWeight, gradBias, workspace, t);
        return;
    }
    bn::RunForDtype<KernelBatchNormBackwardReduce>(t.rows.dtype, dy, bn::NoGm(), x, mean, invstd, sumDy, sumDyXmu,
                                                   gradWeight, gradBias, bn::NoGm(), t, false);
}

extern "C" __global__ __aicore__ void batch_norm_backward_reduce_relu(GM_ADDR dy, GM_ADDR y, GM_ADDR x, GM_ADDR mean,
                                                                      GM_ADDR invstd, GM_ADDR sumDy, GM_ADDR sumDyXmu,
                                                                      GM_ADDR gradWeight, GM_ADDR gradBias,
                                                                      GM_ADDR gradSum, GM_ADDR workspace,
                                                                      GM_ADDR tiling) {
    (void)workspace;
    BnBackwardReduceTiling t;
    bn::LoadTiling(t, tiling);
    bn::RunForDtype<KernelBatchNormBackwardReduce>(t.rows.dtype, dy, y, x, mean, invstd, sumDy, sumDyXmu, gradWeight,
                                                   gradBias, gradSum, t, true);
}

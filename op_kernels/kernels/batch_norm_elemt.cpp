/*
 * batch_norm_elemt: y = (x - mean[c]) * invstd[c] * weight[c] + bias[c] for x
 * viewed as (N, C, L) contiguous; weight / bias optional (1 / 0). mean, invstd,
 * weight, bias are float32 (C,); y has x's dtype. Computes in float32.
 * batch_norm_elemt_act, the fused activation, continues with
 * y = relu(y + residual) (residual: x's shape and dtype; each part optional,
 * see bn::ElemtEpilogue).
 *
 * x (and residual) are read once and y written once; each core walks its
 * items and keeps the per-channel coefficients of a window of paramChunk
 * channels in UB.
 */
#include "bn_common.h"

using namespace AscendC;

template <typename T>
class KernelBatchNormElemt {
public:
    __aicore__ inline KernelBatchNormElemt() {}

    __aicore__ inline void Init(GM_ADDR x, GM_ADDR weight, GM_ADDR bias, GM_ADDR mean, GM_ADDR invstd,
                                GM_ADDR residual, GM_ADDR y, const BnElemtTiling& tiling, bool fused) {
        t_ = tiling.rows;
        hasWeight_ = tiling.hasWeight != 0;
        hasBias_ = tiling.hasBias != 0;
        items_ = bn::CoreItems(t_, GetBlockIdx());
        lastChannel_ = bn::ChannelOfItem(t_, items_.end - 1);

        const uint64_t total = t_.n * t_.c * t_.l;
        xGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), total);
        yGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(y), total);
        meanGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(mean), t_.c);
        invstdGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(invstd), t_.c);
        if (hasWeight_) weightGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(weight), t_.c);
        if (hasBias_) biasGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(bias), t_.c);
        if (fused && tiling.act.hasResidual) residualGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(residual), total);

        const uint32_t chunkBytes = static_cast<uint32_t>(bn::AlignUp(t_.paramChunk * sizeof(float), bn::BLOCK_BYTES));
        pipe_.InitBuffer(inQueue_, bn::BUFFER_NUM, static_cast<uint32_t>(t_.tileElems * sizeof(T)));
        pipe_.InitBuffer(outQueue_, bn::BUFFER_NUM, static_cast<uint32_t>(t_.tileElems * sizeof(T)));
        // the fused ReLU compares xf: then it holds whole 256-byte repeats
        const uint64_t xfElems = fused ? tiling.act.gateElems : t_.tileElems;
        pipe_.InitBuffer(xfBuf_, static_cast<uint32_t>(xfElems * sizeof(float)));
        pipe_.InitBuffer(scaleBuf_, chunkBytes);
        pipe_.InitBuffer(biasBuf_, chunkBytes);
        pipe_.InitBuffer(meanBuf_, chunkBytes);
        pipe_.InitBuffer(invstdBuf_, chunkBytes);
        epilogue_.Init(pipe_, fused, tiling.act, t_.tileElems);
    }

    __aicore__ inline void Process() {
        windowBegin_ = windowEnd_ = 0;
        for (uint64_t item = items_.begin; item < items_.end; ++item) {
            const bn::Tile tile = bn::TileOfItem<T>(t_, item);
            if (item == items_.begin || tile.channel >= windowEnd_) LoadWindow(tile.channel);
            CopyIn(tile);
            Compute(tile);
            CopyOut(tile);
        }
    }

private:
    // scale = invstd * weight for channels [c0, c0 + paramChunk) of this core.
    __aicore__ inline void LoadWindow(uint64_t c0) {
        windowBegin_ = c0;
        windowEnd_ = bn::Min(c0 + t_.paramChunk, lastChannel_ + 1);
        const uint64_t n = windowEnd_ - c0;
        LocalTensor<float> bias = biasBuf_.Get<float>();
        if (hasBias_) {
            bn::CopyChannelsIn(bias, biasGm_, c0, n);
        } else {
            Duplicate(bias, 0.0f, static_cast<int32_t>(n));
        }
        bn::LoadNormWindow(meanBuf_.Get<float>(), invstdBuf_.Get<float>(), scaleBuf_.Get<float>(), meanGm_, invstdGm_,
                           weightGm_, hasWeight_, c0, n);
        PipeBarrier<PIPE_ALL>();
    }

    __aicore__ inline void CopyIn(const bn::Tile& tile) {
        bn::EnQueTile(inQueue_, xGm_, t_, tile);
        if (epilogue_.hasResidual) bn::EnQueTile(epilogue_.residualQueue, residualGm_, t_, tile);
    }

    // (x - mean) first, then the scale: keeps float precision when |mean| >> std.
    __aicore__ inline void Compute(const bn::Tile& tile) {
        const uint64_t j = tile.channel - windowBegin_;
        const float mean = meanBuf_.Get<float>().GetValue(j);
        const float scale = scaleBuf_.Get<float>().GetValue(j);
        const float bias = biasBuf_.Get<float>().GetValue(j);
        const int32_t elems = static_cast<int32_t>(tile.rows * tile.stride);
        LocalTensor<float> xf = xfBuf_.Get<float>();
        bn::DeQueToFloat<T>(xf, inQueue_, elems);
        Adds(xf, xf, -mean, elems);
        Muls(xf, xf, scale, elems);
        Adds(xf, xf, bias, elems);
        LocalTensor<T> y = outQueue_.AllocTensor<T>();
        epilogue_.Finish(xf, y, elems);
        outQueue_.EnQue(y);
    }

    __aicore__ inline void CopyOut(const bn::Tile& tile) { bn::DeQueTileOut(yGm_, outQueue_, t_, tile); }

    TPipe pipe_;
    TQue<QuePosition::VECIN, bn::BUFFER_NUM> inQueue_;
    TQue<QuePosition::VECOUT, bn::BUFFER_NUM> outQueue_;
    TBuf<QuePosition::VECCALC> xfBuf_, scaleBuf_, biasBuf_, meanBuf_, invstdBuf_;
    bn::ElemtEpilogue<T> epilogue_;
    GlobalTensor<T> xGm_, yGm_, residualGm_;
    GlobalTensor<float> meanGm_, invstdGm_, weightGm_, biasGm_;
    BnRowTiling t_;
    bool hasWeight_ = false, hasBias_ = false;
    uint64_t lastChannel_ = 0, windowBegin_ = 0, windowEnd_ = 0;
    bn::ItemRange items_;
};

extern "C" __global__ __aicore__ void batch_norm_elemt(GM_ADDR x, GM_ADDR weight, GM_ADDR bias, GM_ADDR mean,
                                                       GM_ADDR invstd, GM_ADDR y, GM_ADDR workspace, GM_ADDR tiling) {
    (void)workspace;
    BnElemtTiling t;
    bn::LoadTiling(t, tiling);
    bn::RunForDtype<KernelBatchNormElemt>(t.rows.dtype, x, weight, bias, mean, invstd, bn::NoGm(), y, t, false);
}

extern "C" __global__ __aicore__ void batch_norm_elemt_act(GM_ADDR x, GM_ADDR weight, GM_ADDR bias, GM_ADDR mean,
                                                           GM_ADDR invstd, GM_ADDR residual, GM_ADDR y,
                                                           GM_ADDR workspace, GM_ADDR tiling) {
    (void)workspace;
    BnElemtTiling t;
    bn::LoadTiling(t, tiling);
    bn::RunForDtype<KernelBatchNormElemt>(t.rows.dtype, x, weight, bias, mean, invstd, residual, y, t, true);
}

/*
 * batch_norm_elemt on the C-last path: y = (x - mean[c]) * invstd[c] *
 * weight[c] + bias[c] for x viewed as (R, C) with C innermost; weight / bias
 * optional (1 / 0). Same arguments as batch_norm_elemt; y keeps x's layout.
 * batch_norm_elemt_act_clast adds the fused y = relu(y + residual)
 * (bn::ElemtEpilogue), residual in x's layout.
 *
 * x is read once and y written once. Each core walks its rows chunk by chunk;
 * per chunk the coefficients are broadcast over a tile's rows once, so a tile
 * costs three vector ops whatever C is.
 */
#include "bn_clast.h"

using namespace AscendC;

template <typename T>
class KernelBatchNormElemtClast {
public:
    __aicore__ inline KernelBatchNormElemtClast() {}

    __aicore__ inline void Init(GM_ADDR x, GM_ADDR weight, GM_ADDR bias, GM_ADDR mean, GM_ADDR invstd,
                                GM_ADDR residual, GM_ADDR y, const BnClastElemtTiling& tiling, bool fused) {
        t_ = tiling.g;
        hasWeight_ = tiling.hasWeight != 0;
        hasBias_ = tiling.hasBias != 0;
        rows_ = bn::CoreRows(t_, GetBlockIdx());
        usedRows_ = bn::Min(t_.tileRows, rows_.count);

        const uint64_t total = t_.rows * t_.c;
        xGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), total);
        yGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(y), total);
        meanGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(mean), t_.c);
        invstdGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(invstd), t_.c);
        if (hasWeight_) weightGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(weight), t_.c);
        if (hasBias_) biasGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(bias), t_.c);
        if (fused && tiling.act.hasResidual) residualGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(residual), total);

        const uint32_t tileFloats = static_cast<uint32_t>(t_.tileElems * sizeof(float));
        const uint32_t vecBytes = static_cast<uint32_t>(t_.chunkStride * sizeof(float));
        pipe_.InitBuffer(inQueue_, bn::BUFFER_NUM, static_cast<uint32_t>(t_.tileElems * sizeof(T)));
        pipe_.InitBuffer(outQueue_, bn::BUFFER_NUM, static_cast<uint32_t>(t_.tileElems * sizeof(T)));
        // the fused ReLU compares xf: then it holds whole 256-byte repeats
        pipe_.InitBuffer(xfBuf_, fused ? static_cast<uint32_t>(tiling.act.gateElems * sizeof(float)) : tileFloats);
        pipe_.InitBuffer(meanTile_, tileFloats);
        pipe_.InitBuffer(scaleTile_, tileFloats);
        pipe_.InitBuffer(biasTile_, tileFloats);
        pipe_.InitBuffer(meanBuf_, vecBytes);
        pipe_.InitBuffer(invstdBuf_, vecBytes);
        pipe_.InitBuffer(scaleBuf_, vecBytes);
        pipe_.InitBuffer(biasBuf_, vecBytes);
        epilogue_.Init(pipe_, fused, tiling.act, t_.tileElems);
    }

    __aicore__ inline void Process() {
        for (uint64_t j = 0; j < t_.chunks; ++j) {
            const bn::Chunk ch = bn::ChunkOf<T>(t_, j);
            LoadChunk(ch);
            for (uint64_t r = 0; r < rows_.count; r += t_.tileRows) {
                const uint64_t rows = bn::Min(t_.tileRows, rows_.count - r);
                bn::EnQueRows(inQueue_, xGm_, t_, ch, rows_.begin + r, rows);
                if (epilogue_.hasResidual) bn::EnQueRows(epilogue_.residualQueue, residualGm_, t_, ch, rows_.begin + r, rows);
                Compute(bn::Lanes(ch, rows));
                bn::DeQueRowsOut(yGm_, outQueue_, t_, ch, rows_.begin + r, rows);
            }
        }
    }

private:
    // mean, scale = invstd * weight and bias of the chunk, broadcast over usedRows_ rows.
    __aicore__ inline void LoadChunk(const bn::Chunk& ch) {
        PipeBarrier<PIPE_ALL>();  // the previous chunk's vector reads of the buffers are done
        LocalTensor<float> bias = biasBuf_.Get<float>();
        if (hasBias_) {
            bn::CopyChannelsIn(bias, biasGm_, ch.c0, ch.len);
        } else {
            Duplicate(bias, 0.0f, static_cast<int32_t>(ch.len));
        }
        bn::LoadNormWindow(meanBuf_.Get<float>(), invstdBuf_.Get<float>(), scaleBuf_.Get<float>(), meanGm_,
                           invstdGm_, weightGm_, hasWeight_, ch.c0, ch.len);
        bn::BroadcastRows(meanTile_.Get<float>(), meanBuf_.Get<float>(), ch, usedRows_);
        bn::BroadcastRows(scaleTile_.Get<float>(), scaleBuf_.Get<float>(), ch, usedRows_);
        bn::BroadcastRows(biasTile_.Get<float>(), bias, ch, usedRows_);
    }

    // (x - mean) first, then the scale: keeps float precision when |mean| >> std.
    __aicore__ inline void Compute(int32_t elems) {
        LocalTensor<float> xf = xfBuf_.Get<float>();
        bn::DeQueToFloat<T>(xf, inQueue_, elems);
        Sub(xf, xf, meanTile_.Get<float>(), elems);
        Mul(xf, xf, scaleTile_.Get<float>(), elems);
        Add(xf, xf, biasTile_.Get<float>(), elems);
        LocalTensor<T> y = outQueue_.AllocTensor<T>();
        epilogue_.Finish(xf, y, elems);
        outQueue_.EnQue(y);
    }

    TPipe pipe_;
    TQue<QuePosition::VECIN, bn::BUFFER_NUM> inQueue_;
    TQue<QuePosition::VECOUT, bn::BUFFER_NUM> outQueue_;
    TBuf<QuePosition::VECCALC> xfBuf_, meanTile_, scaleTile_, biasTile_, meanBuf_, invstdBuf_, scaleBuf_, biasBuf_;
    bn::ElemtEpilogue<T> epilogue_;
    GlobalTensor<T> xGm_, yGm_, residualGm_;
    GlobalTensor<float> meanGm_, invstdGm_, weightGm_, biasGm_;
    BnClastTiling t_;
    bool hasWeight_ = false, hasBias_ = false;
    uint64_t usedRows_ = 0;
    bn::RowRange rows_;
};

extern "C" __global__ __aicore__ void batch_norm_elemt_clast(GM_ADDR x, GM_ADDR weight, GM_ADDR bias, GM_ADDR mean,
                                                             GM_ADDR invstd, GM_ADDR y, GM_ADDR workspace,
                                                             GM_ADDR tiling) {
    (void)workspace;
    BnClastElemtTiling t;
    bn::LoadTiling(t, tiling);
    bn::RunForDtype<KernelBatchNormElemtClast>(t.g.dtype, x, weight, bias, mean, invstd, bn::NoGm(), y, t,
                                               false);
}

extern "C" __global__ __aicore__ void batch_norm_elemt_act_clast(GM_ADDR x, GM_ADDR weight, GM_ADDR bias,
                                                                 GM_ADDR mean, GM_ADDR invstd, GM_ADDR residual,
                                                                 GM_ADDR y, GM_ADDR workspace, GM_ADDR tiling) {
    (void)workspace;
    BnClastElemtTiling t;
    bn::LoadTiling(t, tiling);
    bn::RunForDtype<KernelBatchNormElemtClast>(t.g.dtype, x, weight, bias, mean, invstd, residual, y, t, true);
}

/*
 * batch_norm_backward_elemt on the C-last path: for dy, x viewed as (R, C)
 * with C innermost,
 *   dx = (dy - sum_dy/N - (x - mean) * invstd^2 * sum_dy_xmu/N) * invstd * weight
 * with N = sum(count). Same arguments as batch_norm_backward_elemt; dx keeps
 * the layout of dy and x.
 *
 * dy and x are each read once, dx written once. Per chunk the coefficients
 * a = sum_dy/N, b = sum_dy_xmu/N*invstd^2, k = invstd*weight and mean are
 * broadcast over a tile's rows once, so each tile costs five vector ops.
 */
#include "bn_clast.h"

using namespace AscendC;

template <typename T>
class KernelBatchNormBackwardElemtClast {
public:
    __aicore__ inline KernelBatchNormBackwardElemtClast() {}

    __aicore__ inline void Init(GM_ADDR dy, GM_ADDR x, GM_ADDR mean, GM_ADDR invstd, GM_ADDR weight, GM_ADDR sumDy,
                                GM_ADDR sumDyXmu, GM_ADDR count, GM_ADDR dx, const BnClastBackwardElemtTiling& tiling) {
        t_ = tiling.g;
        hasWeight_ = tiling.hasWeight != 0;
        world_ = tiling.world;
        rows_ = bn::CoreRows(t_, GetBlockIdx());
        usedRows_ = bn::Min(t_.tileRows, rows_.count);

        const uint64_t total = t_.rows * t_.c;
        dyGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(dy), total);
        xGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), total);
        dxGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(dx), total);
        params_.Bind(mean, invstd, weight, sumDy, sumDyXmu, count, t_.c, world_, hasWeight_);

        const uint32_t tileT = static_cast<uint32_t>(t_.tileElems * sizeof(T));
        const uint32_t tileFloats = static_cast<uint32_t>(t_.tileElems * sizeof(float));
        const uint32_t vecBytes = static_cast<uint32_t>(t_.chunkStride * sizeof(float));
        pipe_.InitBuffer(dyQueue_, bn::BUFFER_NUM, tileT);
        pipe_.InitBuffer(xQueue_, bn::BUFFER_NUM, tileT);
        pipe_.InitBuffer(dxQueue_, bn::BUFFER_NUM, tileT);
        pipe_.InitBuffer(dyfBuf_, tileFloats);
        pipe_.InitBuffer(xfBuf_, tileFloats);
        pipe_.InitBuffer(meanTile_, tileFloats);
        pipe_.InitBuffer(aTile_, tileFloats);
        pipe_.InitBuffer(bTile_, tileFloats);
        pipe_.InitBuffer(kTile_, tileFloats);
        pipe_.InitBuffer(meanBuf_, vecBytes);
        pipe_.InitBuffer(invstdBuf_, vecBytes);
        pipe_.InitBuffer(kBuf_, vecBytes);
        pipe_.InitBuffer(aBuf_, vecBytes);
        pipe_.InitBuffer(bBuf_, vecBytes);
        pipe_.InitBuffer(countBuf_, static_cast<uint32_t>(bn::AlignUp(t_.countChunk * sizeof(float), bn::BLOCK_BYTES)));
    }

    __aicore__ inline void Process() {
        invTotal_ = 1.0f / TotalCount();
        for (uint64_t j = 0; j < t_.chunks; ++j) {
            const bn::Chunk ch = bn::ChunkOf<T>(t_, j);
            LoadChunk(ch);
            for (uint64_t r = 0; r < rows_.count; r += t_.tileRows) {
                const uint64_t rows = bn::Min(t_.tileRows, rows_.count - r);
                bn::EnQueRows(dyQueue_, dyGm_, t_, ch, rows_.begin + r, rows);
                bn::EnQueRows(xQueue_, xGm_, t_, ch, rows_.begin + r, rows);
                Compute(bn::Lanes(ch, rows));
                bn::DeQueRowsOut(dxGm_, dxQueue_, t_, ch, rows_.begin + r, rows);
            }
        }
    }

private:
    // N = sum(count), countChunk counts at a time, added as scalars after the copy.
    __aicore__ inline float TotalCount() {
        LocalTensor<float> buf = countBuf_.Get<float>();
        float total = 0.0f;
        for (uint64_t w0 = 0; w0 < world_; w0 += t_.countChunk) {
            const uint64_t n = bn::Min(t_.countChunk, world_ - w0);
            bn::CopyChannelsIn(buf, params_.count, w0, n);
            PipeBarrier<PIPE_ALL>();
            for (uint64_t i = 0; i < n; ++i) total += buf.GetValue(i);
            PipeBarrier<PIPE_ALL>();
        }
        return total;
    }

    __aicore__ inline void LoadChunk(const bn::Chunk& ch) {
        PipeBarrier<PIPE_ALL>();  // the previous chunk's vector reads of the buffers are done
        bn::LoadGradCoefficients(meanBuf_.Get<float>(), invstdBuf_.Get<float>(), kBuf_.Get<float>(), aBuf_.Get<float>(),
                                 bBuf_.Get<float>(), params_, invTotal_, ch.c0, ch.len);
        bn::BroadcastRows(meanTile_.Get<float>(), meanBuf_.Get<float>(), ch, usedRows_);
        bn::BroadcastRows(aTile_.Get<float>(), aBuf_.Get<float>(), ch, usedRows_);
        bn::BroadcastRows(bTile_.Get<float>(), bBuf_.Get<float>(), ch, usedRows_);
        bn::BroadcastRows(kTile_.Get<float>(), kBuf_.Get<float>(), ch, usedRows_);
    }

    __aicore__ inline void Compute(int32_t elems) {
        LocalTensor<float> dyf = dyfBuf_.Get<float>();
        LocalTensor<float> xf = xfBuf_.Get<float>();
        bn::DeQueToFloat<T>(dyf, dyQueue_, elems);
        bn::DeQueToFloat<T>(xf, xQueue_, elems);
        Sub(xf, xf, meanTile_.Get<float>(), elems);
        Mul(xf, xf, bTile_.Get<float>(), elems);
        Sub(dyf, dyf, xf, elems);
        Sub(dyf, dyf, aTile_.Get<float>(), elems);
        Mul(dyf, dyf, kTile_.Get<float>(), elems);
        bn::EnQueFromFloat<T>(dxQueue_, dyf, elems);
    }

    TPipe pipe_;
    TQue<QuePosition::VECIN, bn::BUFFER_NUM> dyQueue_, xQueue_;
    TQue<QuePosition::VECOUT, bn::BUFFER_NUM> dxQueue_;
    TBuf<QuePosition::VECCALC> dyfBuf_, xfBuf_, meanTile_, aTile_, bTile_, kTile_;
    TBuf<QuePosition::VECCALC> meanBuf_, invstdBuf_, kBuf_, aBuf_, bBuf_, countBuf_;
    GlobalTensor<T> dyGm_, xGm_, dxGm_;
    bn::GradElemtGm params_;
    BnClastTiling t_;
    bool hasWeight_ = false;
    uint64_t world_ = 0, usedRows_ = 0;
    float invTotal_ = 0.0f;
    bn::RowRange rows_;
};

extern "C" __global__ __aicore__ void batch_norm_backward_elemt_clast(GM_ADDR dy, GM_ADDR x, GM_ADDR mean,
                                                                      GM_ADDR invstd, GM_ADDR weight, GM_ADDR sumDy,
                                                                      GM_ADDR sumDyXmu, GM_ADDR count, GM_ADDR dx,
                                                                      GM_ADDR workspace, GM_ADDR tiling) {
    (void)workspace;
    BnClastBackwardElemtTiling t;
    bn::LoadTiling(t, tiling);
    bn::RunForDtype<KernelBatchNormBackwardElemtClast>(t.g.dtype, dy, x, mean, invstd, weight, sumDy, sumDyXmu,
                                                       count, dx, t);
}

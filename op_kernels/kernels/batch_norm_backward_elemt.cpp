/*
 * batch_norm_backward_elemt: for dy, x viewed as (N, C, L) contiguous,
 *   dx = (dy - sum_dy/N - (x - mean) * invstd^2 * sum_dy_xmu/N) * invstd * weight
 * with N = sum(count) the global element count per channel (count: float32 (W,)
 * per-rank counts). mean, invstd, weight (optional), sum_dy, sum_dy_xmu are
 * float32 (C,); dx has dy's dtype.
 *
 * dy and x are each read once, dx written once. Per channel the kernel folds
 * the parameters into three coefficients a = sum_dy/N, b = sum_dy_xmu/N*invstd^2,
 * k = invstd*weight, so each tile costs five vector ops.
 */
#include "bn_common.h"

using namespace AscendC;

template <typename T>
class KernelBatchNormBackwardElemt {
public:
    __aicore__ inline KernelBatchNormBackwardElemt() {}

    __aicore__ inline void Init(GM_ADDR dy, GM_ADDR x, GM_ADDR mean, GM_ADDR invstd, GM_ADDR weight, GM_ADDR sumDy,
                                GM_ADDR sumDyXmu, GM_ADDR count, GM_ADDR dx, const BnBackwardElemtTiling& tiling) {
        t_ = tiling.rows;
        hasWeight_ = tiling.hasWeight != 0;
        world_ = tiling.world;
        items_ = bn::CoreItems(t_, GetBlockIdx());
        lastChannel_ = bn::ChannelOfItem(t_, items_.end - 1);

        const uint64_t total = t_.n * t_.c * t_.l;
        dyGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(dy), total);
        xGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), total);
        dxGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(dx), total);
        params_.Bind(mean, invstd, weight, sumDy, sumDyXmu, count, t_.c, world_, hasWeight_);

        const uint32_t tileT = static_cast<uint32_t>(t_.tileElems * sizeof(T));
        const uint32_t tileFloats = static_cast<uint32_t>(t_.tileElems * sizeof(float));
        const uint32_t chunkBytes = static_cast<uint32_t>(bn::AlignUp(t_.paramChunk * sizeof(float), bn::BLOCK_BYTES));
        pipe_.InitBuffer(dyQueue_, bn::BUFFER_NUM, tileT);
        pipe_.InitBuffer(xQueue_, bn::BUFFER_NUM, tileT);
        pipe_.InitBuffer(dxQueue_, bn::BUFFER_NUM, tileT);
        pipe_.InitBuffer(dyfBuf_, tileFloats);
        pipe_.InitBuffer(xfBuf_, tileFloats);
        pipe_.InitBuffer(meanBuf_, chunkBytes);
        pipe_.InitBuffer(invstdBuf_, chunkBytes);
        pipe_.InitBuffer(kBuf_, chunkBytes);
        pipe_.InitBuffer(aBuf_, chunkBytes);
        pipe_.InitBuffer(bBuf_, chunkBytes);
        pipe_.InitBuffer(workBuf_, t_.reduceWorkElems * sizeof(float));
        pipe_.InitBuffer(resBuf_, t_.reduceWorkElems * sizeof(float));
    }

    __aicore__ inline void Process() {
        invTotal_ = 1.0f / TotalCount();
        for (uint64_t item = items_.begin; item < items_.end; ++item) {
            const bn::Tile tile = bn::TileOfItem<T>(t_, item);
            if (item == items_.begin || tile.channel >= windowEnd_) LoadWindow(tile.channel);
            CopyIn(tile);
            Compute(tile);
            CopyOut(tile);
        }
    }

private:
    // N = sum(count), summed paramChunk counts at a time.
    __aicore__ inline float TotalCount() {
        LocalTensor<float> buf = aBuf_.Get<float>();
        float total = 0.0f;
        for (uint64_t w0 = 0; w0 < world_; w0 += t_.paramChunk) {
            const uint64_t n = bn::Min(t_.paramChunk, world_ - w0);
            PipeBarrier<PIPE_ALL>();  // the previous ReduceSum has read buf
            bn::CopyChannelsIn(buf, params_.count, w0, n);
            PipeBarrier<PIPE_ALL>();
            total += bn::SumLanes(buf, n, resBuf_.Get<float>(), workBuf_.Get<float>());
        }
        PipeBarrier<PIPE_ALL>();  // before buf is loaded with the first window (once a launch)
        return total;
    }

    __aicore__ inline void LoadWindow(uint64_t c0) {
        windowBegin_ = c0;
        windowEnd_ = bn::Min(c0 + t_.paramChunk, lastChannel_ + 1);
        bn::LoadGradCoefficients(meanBuf_.Get<float>(), invstdBuf_.Get<float>(), kBuf_.Get<float>(), aBuf_.Get<float>(),
                                 bBuf_.Get<float>(), params_, invTotal_, c0, windowEnd_ - c0);
        PipeBarrier<PIPE_ALL>();
    }

    __aicore__ inline void CopyIn(const bn::Tile& tile) {
        bn::EnQueTile(dyQueue_, dyGm_, t_, tile);
        bn::EnQueTile(xQueue_, xGm_, t_, tile);
    }

    __aicore__ inline void Compute(const bn::Tile& tile) {
        const uint64_t j = tile.channel - windowBegin_;
        const float mean = meanBuf_.Get<float>().GetValue(j);
        const float a = aBuf_.Get<float>().GetValue(j);
        const float b = bBuf_.Get<float>().GetValue(j);
        const float k = kBuf_.Get<float>().GetValue(j);
        const int32_t elems = static_cast<int32_t>(tile.rows * tile.stride);
        LocalTensor<float> dyf = dyfBuf_.Get<float>();
        LocalTensor<float> xf = xfBuf_.Get<float>();
        bn::DeQueToFloat<T>(dyf, dyQueue_, elems);
        bn::DeQueToFloat<T>(xf, xQueue_, elems);
        Adds(xf, xf, -mean, elems);
        Muls(xf, xf, b, elems);
        Sub(dyf, dyf, xf, elems);
        Adds(dyf, dyf, -a, elems);
        Muls(dyf, dyf, k, elems);
        bn::EnQueFromFloat<T>(dxQueue_, dyf, elems);
    }

    __aicore__ inline void CopyOut(const bn::Tile& tile) { bn::DeQueTileOut(dxGm_, dxQueue_, t_, tile); }

    TPipe pipe_;
    TQue<QuePosition::VECIN, bn::BUFFER_NUM> dyQueue_, xQueue_;
    TQue<QuePosition::VECOUT, bn::BUFFER_NUM> dxQueue_;
    TBuf<QuePosition::VECCALC> dyfBuf_, xfBuf_, meanBuf_, invstdBuf_, kBuf_, aBuf_, bBuf_, workBuf_, resBuf_;
    GlobalTensor<T> dyGm_, xGm_, dxGm_;
    bn::GradElemtGm params_;
    BnRowTiling t_;
    bool hasWeight_ = false;
    uint64_t world_ = 0, lastChannel_ = 0, windowBegin_ = 0, windowEnd_ = 0;
    float invTotal_ = 0.0f;
    bn::ItemRange items_;
};

extern "C" __global__ __aicore__ void batch_norm_backward_elemt(GM_ADDR dy, GM_ADDR x, GM_ADDR mean, GM_ADDR invstd,
                                                                GM_ADDR weight, GM_ADDR sumDy, GM_ADDR sumDyXmu,
                                                                GM_ADDR count, GM_ADDR dx, GM_ADDR workspace,
                                                                GM_ADDR tiling) {
    (void)workspace;
    BnBackwardElemtTiling t;
    bn::LoadTiling(t, tiling);
    bn::RunForDtype<KernelBatchNormBackwardElemt>(t.rows.dtype, dy, x, mean, invstd, weight, sumDy, sumDyXmu,
                                                  count, dx, t);
}

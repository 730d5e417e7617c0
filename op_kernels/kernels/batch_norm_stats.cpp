/*
 * batch_norm_stats: per-channel mean and invstd = 1 / sqrt(biased var + eps) of
 * x viewed as (N, C, L) contiguous. Outputs are float32 (C,).
 *
 * With the tiling's splits > 1, each channel is cut into that many parts and
 * the outputs are (splits, C) partials (mean and invstd of each part), merged
 * by the host with batch_norm_gather_stats_with_counts (Chan's merge, counts =
 * the parts' sizes): a second launch on the same stream, no barrier.
 *
 * x is read from GM exactly once. Each (part, channel) unit is reduced by one
 * core (include/batch_norm_tiling.h), which accumulates sums of (x - K) and
 * (x - K)^2 in one UB row of lanes (each tile row added in, its pad lanes
 * left out), K the mean of the part's first row (shifted sums: no
 * cancellation when |mean| >> std).
 */
#include "bn_common.h"
#include "batch_norm_stats_packed.h"

using namespace AscendC;

struct BnMoments {
    float count;
    float mean;
    float m2;
};

template <typename T>
class KernelBatchNormStats {
public:
    __aicore__ inline KernelBatchNormStats() {}

    __aicore__ inline void Init(GM_ADDR x, GM_ADDR mean, GM_ADDR invstd, const BnStatsTiling& tiling) {
        t_ = tiling.rows;
        eps_ = tiling.eps;
        units_ = bn::CoreUnits(t_, GetBlockIdx());

        xGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), t_.n * t_.c * t_.l);
        meanGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(mean), uint64_t(t_.splits) * t_.c);
        invstdGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(invstd), uint64_t(t_.splits) * t_.c);

        const uint32_t rowFloats = static_cast<uint32_t>(t_.tileStride * sizeof(float));
        const uint32_t chunkBytes = static_cast<uint32_t>(bn::AlignUp(t_.paramChunk * sizeof(float), bn::BLOCK_BYTES));
        pipe_.InitBuffer(inQueue_, bn::BUFFER_NUM, static_cast<uint32_t>(t_.tileElems * sizeof(T)));
        pipe_.InitBuffer(xfBuf_, static_cast<uint32_t>(t_.tileElems * sizeof(float)));
        pipe_.InitBuffer(sumBuf_, rowFloats);
        pipe_.InitBuffer(sqBuf_, rowFloats);
        pipe_.InitBuffer(workBuf_, t_.reduceWorkElems * sizeof(float));
        pipe_.InitBuffer(resBuf_, t_.reduceWorkElems * sizeof(float));
        pipe_.InitBuffer(res2Buf_, t_.reduceWorkElems * sizeof(float));
        pipe_.InitBuffer(meanOutBuf_, chunkBytes);
        pipe_.InitBuffer(varOutBuf_, chunkBytes);
        pipe_.InitBuffer(onesBuf_, chunkBytes);
    }

    // Reduce each of the core's (part, channel) units; stage its result at output entry u.
    __aicore__ inline void Process() {
        windowBegin_ = units_.begin;
        windowCount_ = 0;
        if (units_.begin < units_.end) CopyIn(bn::TileOfItem<T>(t_, bn::ItemsOfUnit(t_, units_.begin).begin));
        for (uint64_t u = units_.begin; u < units_.end; ++u) {
            Stage(u, ReduceChannel(u));
        }
        Flush();
    }

private:
    // Shifted per-lane sums over unit u's tiles, each tile row added into one
    // row of lanes (count = its length: pad lanes never join). The first tile
    // was copied in ahead, and each tile's successor (bn::NextItem) is copied
    // in before the tile is computed.
    __aicore__ inline BnMoments ReduceChannel(uint64_t u) {
        const bn::ItemRange items = bn::ItemsOfUnit(t_, u);
        LocalTensor<float> xf = xfBuf_.Get<float>();
        LocalTensor<float> sum = sumBuf_.Get<float>();
        LocalTensor<float> sq = sqBuf_.Get<float>();
        Duplicate(sum, 0.0f, static_cast<int32_t>(t_.tileStride));
        Duplicate(sq, 0.0f, static_cast<int32_t>(t_.tileStride));
        float shift = 0.0f;
        uint64_t lanes = 0, count = 0;
        for (uint64_t item = items.begin; item < items.end; ++item) {
            const bn::Tile tile = bn::TileOfItem<T>(t_, item);
            uint64_t next = 0;
            if (bn::NextItem(t_, units_, u, item, next)) CopyIn(bn::TileOfItem<T>(t_, next));
            const int32_t elems = static_cast<int32_t>(tile.rows * tile.stride), len = static_cast<int32_t>(tile.len);
            bn::DeQueToFloat<T>(xf, inQueue_, elems);
            if (item == items.begin) {
                // K = the mean of the part's first row (or row chunk): within
                // a few std of the channel mean, so the shifted sums stay
                // small whatever |mean| is. Taken from the widened float copy:
                // no scalar cast of T (bisheng rejects one for bfloat16_t);
                // SumLanes orders the vector work before its scalar read.
                shift = bn::SumLanes(xf, tile.len, resBuf_.Get<float>(), workBuf_.Get<float>()) /
                        static_cast<float>(tile.len);
            }
            Adds(xf, xf, -shift, elems);
            for (uint64_t r = 0; r < tile.rows; ++r) Add(sum, sum, xf[r * tile.stride], len);
            Mul(xf, xf, xf, elems);
            for (uint64_t r = 0; r < tile.rows; ++r) Add(sq, sq, xf[r * tile.stride], len);
            lanes = bn::Max(lanes, tile.len);
            count += tile.rows * tile.len;
        }
        float s1 = 0.0f, s2 = 0.0f;
        bn::SumLanes2(sum, sq, lanes, resBuf_.Get<float>(), res2Buf_.Get<float>(), workBuf_.Get<float>(), s1, s2);
        BnMoments p;
        p.count = static_cast<float>(count);
        p.mean = shift + s1 / p.count;
        p.m2 = s2 - s1 * (s1 / p.count);
        if (p.m2 < 0.0f) p.m2 = 0.0f;
        return p;
    }

    __aicore__ inline void CopyIn(const bn::Tile& tile) { bn::EnQueTile(inQueue_, xGm_, t_, tile); }

    // Results go to UB batches of paramChunk output entries, written with one copy each.
    __aicore__ inline void Stage(uint64_t u, const BnMoments& p) {
        if (u >= windowBegin_ + t_.paramChunk) {
            Flush();
            windowBegin_ = u;
        }
        meanOutBuf_.Get<float>().SetValue(u - windowBegin_, p.mean);
        varOutBuf_.Get<float>().SetValue(u - windowBegin_, p.m2 / p.count);
        windowCount_ = u - windowBegin_ + 1;
    }

    __aicore__ inline void Flush() {
        if (windowCount_ == 0) return;
        const int32_t n = static_cast<int32_t>(windowCount_);
        LocalTensor<float> var = varOutBuf_.Get<float>();
        LocalTensor<float> ones = onesBuf_.Get<float>();
        PipeBarrier<PIPE_ALL>();
        bn::InvStdInPlace(var, ones, eps_, n);
        PipeBarrier<PIPE_ALL>();
        bn::CopyChannelsOut(meanGm_, meanOutBuf_.Get<float>(), windowBegin_, windowCount_);
        bn::CopyChannelsOut(invstdGm_, var, windowBegin_, windowCount_);
        PipeBarrier<PIPE_ALL>();
        windowCount_ = 0;
    }

    TPipe pipe_;
    TQue<QuePosition::VECIN, bn::BUFFER_NUM> inQueue_;
    TBuf<QuePosition::VECCALC> xfBuf_, sumBuf_, sqBuf_, workBuf_, resBuf_, res2Buf_;
    TBuf<QuePosition::VECCALC> meanOutBuf_, varOutBuf_, onesBuf_;
    GlobalTensor<T> xGm_;
    GlobalTensor<float> meanGm_, invstdGm_;
    BnRowTiling t_;
    float eps_ = 0.0f;
    uint64_t windowBegin_ = 0, windowCount_ = 0;
    bn::ItemRange units_;
};

extern "C" __global__ __aicore__ void batch_norm_stats(GM_ADDR x, GM_ADDR mean, GM_ADDR invstd, GM_ADDR workspace,
                                                       GM_ADDR tiling) {
    // workspace: the packed kernel's per-core rows; cut channels' partials are outputs of their own
    BnStatsTiling t;
    bn::LoadTiling(t, tiling);
    if (t.rows.packGroup) {
        bn::RunForDtype<KernelBatchNormStatsPacked>(t.rows.dtype, x, mean, invstd, workspace, t);
        return;
    }
    bn::RunForDtype<KernelBatchNormStats>(t.rows.dtype, x, mean, invstd, t);
}

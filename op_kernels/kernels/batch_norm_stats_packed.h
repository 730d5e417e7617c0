/*
 * batch_norm_stats on short rows (the packed layout of include/batch_norm_tiling.h):
 * the same outputs as KernelBatchNormStats, per-channel mean and invstd of x
 * viewed as (N, C, L), for small L (7x7 and 14x14 planes) where one burst per
 * (sample, channel) row would be a few hundred bytes and every channel would
 * end in its own scalar read-backs.
 *
 * A unit is a group of G channels with all N samples. A tile is `rows` samples
 * of the group's G*L contiguous elements (one burst a sample). Sums are kept
 * per lane (position j of the group's G*L): s1_j = sum(x - K_j), s2_j =
 * sum((x - K_j)^2), K_j the unit's first sample at j (a shift from data, so no
 * cancellation when |mean| >> std, and no scalar read to find it). At the end
 * of the unit K_j, d_j = s1_j / N and M2_j = s2_j - s1_j^2 / N come back as
 * one 32-byte aligned row of L per channel (bn::PackedLanes). A channel's mean
 * is the mean of its lane means K_j + d_j, and its M2 the sum of its M2_j plus
 * N * sum_j ((K_j - mean) + d_j)^2 (Chan's merge of the L lanes; K_j - mean is
 * exact for close values, so a large mean does not round the lanes' spread).
 * Per channel that is eight vector instructions and one scalar read; the
 * results leave in one strided copy per output. The float buffers are one row
 * (G*L lanes) each, so the tiles of T get the UB: fewer, longer copies.
 */
#ifndef NPU_SYNCBN_BATCH_NORM_STATS_PACKED_H
#define NPU_SYNCBN_BATCH_NORM_STATS_PACKED_H

#include "bn_packed.h"

template <typename T>
class KernelBatchNormStatsPacked {
public:
    __aicore__ inline KernelBatchNormStatsPacked() {}

    __aicore__ inline void Init(GM_ADDR x, GM_ADDR mean, GM_ADDR invstd, GM_ADDR workspace,
                                const BnStatsTiling& tiling) {
        using namespace AscendC;
        t_ = tiling.rows;
        eps_ = tiling.eps;
        units_ = bn::CoreUnits(t_, GetBlockIdx());
        xGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(x), t_.n * t_.c * t_.l);
        meanGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(mean), t_.c);
        invstdGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(invstd), t_.c);
        const uint32_t rowFloats = static_cast<uint32_t>(t_.tileStride * sizeof(float));
        pipe_.InitBuffer(inQueue_, bn::BUFFER_NUM, static_cast<uint32_t>(t_.tileElems * sizeof(T)));
        pipe_.InitBuffer(xfBuf_, rowFloats);
        pipe_.InitBuffer(shiftBuf_, rowFloats);
        pipe_.InitBuffer(sumBuf_, rowFloats);
        pipe_.InitBuffer(sqBuf_, rowFloats);
        lanes_.Init(pipe_, t_, workspace, BN_PACKED_STATS_ROWS);
    }

    __aicore__ inline void Process() {
        if (units_.begin < units_.end) CopyIn(bn::TileOfItem<T>(t_, bn::ItemsOfUnit(t_, units_.begin).begin));
        for (uint64_t u = units_.begin; u < units_.end; ++u) {
            SumLanesOfGroup(u);
            ChannelsOfGroup(u);
        }
    }

private:
    __aicore__ inline void CopyIn(const bn::Tile& tile) { bn::EnQueTile(inQueue_, xGm_, t_, tile); }

    // Per-lane shifted sums of unit u over all samples, a sample row at a time
    // (the float buffers are one row: the tile of T gets the UB); then shift
    // holds K_j, xf d_j and sq M2_j.
    __aicore__ inline void SumLanesOfGroup(uint64_t u) {
        using namespace AscendC;
        const bn::ItemRange items = bn::ItemsOfUnit(t_, u);
        LocalTensor<float> xf = xfBuf_.Get<float>(), shift = shiftBuf_.Get<float>();
        LocalTensor<float> sum = sumBuf_.Get<float>(), sq = sqBuf_.Get<float>();
        const int32_t lanes = static_cast<int32_t>(bn::TileOfItem<T>(t_, items.begin).stride);
        Duplicate(sum, 0.0f, lanes);
        Duplicate(sq, 0.0f, lanes);
        for (uint64_t item = items.begin; item < items.end; ++item) {
            const bn::Tile tile = bn::TileOfItem<T>(t_, item);
            uint64_t next = 0;
            if (bn::NextItem(t_, units_, u, item, next)) CopyIn(bn::TileOfItem<T>(t_, next));
            LocalTensor<T> x = inQueue_.template DeQue<T>();
            // K = the unit's first sample. Pad lanes hold anything: only each
            // channel's L lanes are reduced.
            if (item == items.begin) bn::ToFloat(shift, x, lanes);
            for (uint64_t r = 0; r < tile.rows; ++r) {
                bn::SubAsFloat(xf, x[r * tile.stride], shift, lanes);
                Add(sum, sum, xf, lanes);
                Mul(xf, xf, xf, lanes);
                Add(sq, sq, xf, lanes);
            }
            inQueue_.FreeTensor(x);
        }
        Muls(xf, sum, 1.0f / static_cast<float>(t_.n), lanes);  // d_j = s1 / N
        Mul(sum, sum, xf, lanes);                               // s1^2 / N
        Sub(sq, sq, sum, lanes);                                // M2_j
    }

    // From the lanes of unit u (K_j, d_j, M2_j) to the mean and invstd of its
    // channels, written to GM.
    __aicore__ inline void ChannelsOfGroup(uint64_t u) {
        using namespace AscendC;
        const uint64_t c0 = bn::ChannelOfUnit(t_, u) * t_.packGroup;
        const uint64_t g = bn::Min(t_.packGroup, t_.c - c0);
        lanes_.LanesToRows(shiftBuf_.Get<float>(), xfBuf_.Get<float>(), sqBuf_.Get<float>(), g, BN_PACKED_STATS_ROWS);
        // spreads first hold the sums of d_j
        LocalTensor<float> means = lanes_.Slots(0), spreads = lanes_.Slots(1), m2s = lanes_.Slots(2);
        LocalTensor<float> ones = lanes_.Slots(3), rows = lanes_.rows.Get<float>(), work = lanes_.work.Get<float>();
        lanes_.ReduceRows(means, 0, g);
        lanes_.ReduceRows(spreads, g, g);
        lanes_.ReduceRows(m2s, 2 * g, g);
        const int32_t l = static_cast<int32_t>(t_.l), slotLanes = static_cast<int32_t>(g * BN_PACKED_SLOT_FLOATS);
        Add(means, means, spreads, slotLanes);
        Muls(means, means, 1.0f / static_cast<float>(t_.l), slotLanes);
        bn::Handoff<HardEvent::V_S>();
        for (uint64_t c = 0; c < g; ++c) {  // sum_j ((K_j - mean) + d_j)^2, each channel's mean read back once
            const LocalTensor<float> k = rows[c * lanes_.lStride];
            Adds(k, k, -means.GetValue(c * BN_PACKED_SLOT_FLOATS), l);
            Add(k, k, rows[(g + c) * lanes_.lStride], l);
            Mul(k, k, k, l);
            ReduceSum(spreads[c * BN_PACKED_SLOT_FLOATS], k, work, l);
        }
        // var = (M2 + N * spread) / (N * L), then invstd; lanes between the slots' first hold scratch.
        Muls(spreads, spreads, static_cast<float>(t_.n), slotLanes);
        Add(m2s, m2s, spreads, slotLanes);
        // Rounding may leave M2 a hair below 0: clamp, but keep NaN (Maxs may
        // drop it) by adding M2 - M2, which is 0 or NaN.
        Sub(ones, m2s, m2s, slotLanes);
        Maxs(m2s, m2s, 0.0f, slotLanes);
        Add(m2s, m2s, ones, slotLanes);
        Muls(m2s, m2s, 1.0f / static_cast<float>(t_.n * t_.l), slotLanes);
        bn::InvStdInPlace(m2s, ones, eps_, slotLanes);
        bn::Handoff<HardEvent::V_MTE3>();
        lanes_.SlotsOut(meanGm_, means, c0, g);
        lanes_.SlotsOut(invstdGm_, m2s, c0, g);
        lanes_.EndUnit();
    }

    AscendC::TPipe pipe_;
    AscendC::TQue<AscendC::QuePosition::VECIN, bn::BUFFER_NUM> inQueue_;
    AscendC::TBuf<AscendC::QuePosition::VECCALC> xfBuf_, shiftBuf_, sumBuf_, sqBuf_;
    bn::PackedLanes lanes_;
    AscendC::GlobalTensor<T> xGm_;
    AscendC::GlobalTensor<float> meanGm_, invstdGm_;
    BnRowTiling t_;
    float eps_ = 0.0f;
    bn::ItemRange units_;
};

#endif  // NPU_SYNCBN_BATCH_NORM_STATS_PACKED_H

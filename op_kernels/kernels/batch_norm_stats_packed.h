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
 * of the unit K_j, d_j = s1_j / N and M2_j = s2_j - s1_j^2 / N go out to this
 * core's workspace rows and come back as one 32-byte aligned row of L per
 * channel (the only way to realign a channel that starts mid-block). A
 * channel's mean is the mean of the lane means K_j + d_j, and its M2 the sum
 * of its M2_j plus N * sum_j ((K_j - mean) + d_j)^2 (Chan's merge of the L
 * lanes; K_j - mean is exact for close values, so a large mean does not round
 * the lanes' spread). Per channel that is seven vector instructions and one
 * scalar read; the results leave in one strided copy per output.
 */
#ifndef NPU_SYNCBN_BATCH_NORM_STATS_PACKED_H
#define NPU_SYNCBN_BATCH_NORM_STATS_PACKED_H

#include "bn_common.h"

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
        // This core's rows: host/tiling.cpp BnPackedWorkspaceStride (3 * G * L floats, 512-byte aligned).
        const uint64_t wsFloats = bn::AlignUp(3 * uint64_t(t_.packGroup) * t_.l * 4, 512) / 4;
        wsGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(workspace) + GetBlockIdx() * wsFloats, wsFloats);

        const uint32_t tileFloats = static_cast<uint32_t>(t_.tileElems * sizeof(float));
        lStride_ = bn::AlignUp(t_.l, 8);
        pipe_.InitBuffer(inQueue_, bn::BUFFER_NUM, static_cast<uint32_t>(t_.tileElems * sizeof(T)));
        pipe_.InitBuffer(xfBuf_, tileFloats);
        pipe_.InitBuffer(shiftBuf_, tileFloats);
        pipe_.InitBuffer(sumBuf_, tileFloats);
        pipe_.InitBuffer(sqBuf_, tileFloats);
        // host/tiling.cpp PackedFixedBytes: ReduceSum work, the realigned rows, kSlots slots of 8 floats a channel.
        pipe_.InitBuffer(workBuf_, t_.reduceWorkElems * sizeof(float));
        pipe_.InitBuffer(rowsBuf_, static_cast<uint32_t>(bn::AlignUp(3 * t_.packGroup * lStride_ * 4, bn::BLOCK_BYTES)));
        pipe_.InitBuffer(slotBuf_, static_cast<uint32_t>(kSlots * t_.packGroup * kSlotFloats * sizeof(float)));
    }

    __aicore__ inline void Process() {
        if (units_.begin < units_.end) CopyIn(bn::TileOfItem<T>(t_, bn::ItemsOfUnit(t_, units_.begin).begin));
        for (uint64_t u = units_.begin; u < units_.end; ++u) {
            SumLanesOfGroup(u);
            ChannelsOfGroup(u);
        }
    }

private:
    static constexpr uint64_t kSlots = 4;       // means, spreads, M2s, ones (host/tiling.cpp kPackedSlots)
    static constexpr uint64_t kSlotFloats = 8;  // one ReduceSum result of <= 8 repeats

    __aicore__ inline void CopyIn(const bn::Tile& tile) { bn::EnQueTile(inQueue_, xGm_, t_, tile); }

    // Per-lane shifted sums of unit u over all samples, folded into row 0 of
    // sum / sq; then shift row 0 holds K_j, xf row 0 d_j and sq row 0 M2_j.
    __aicore__ inline void SumLanesOfGroup(uint64_t u) {
        using namespace AscendC;
        const bn::ItemRange items = bn::ItemsOfUnit(t_, u);
        LocalTensor<float> xf = xfBuf_.Get<float>(), shift = shiftBuf_.Get<float>();
        LocalTensor<float> sum = sumBuf_.Get<float>(), sq = sqBuf_.Get<float>();
        const int32_t all = static_cast<int32_t>(t_.tileElems);
        Duplicate(sum, 0.0f, all);
        Duplicate(sq, 0.0f, all);
        uint64_t stride = 0;
        for (uint64_t item = items.begin; item < items.end; ++item) {
            const bn::Tile tile = bn::TileOfItem<T>(t_, item);
            uint64_t next = 0;
            if (bn::NextItem(t_, units_, u, item, next)) CopyIn(bn::TileOfItem<T>(t_, next));
            stride = tile.stride;
            const int32_t elems = static_cast<int32_t>(tile.rows * tile.stride);
            bn::DeQueToFloat<T>(xf, inQueue_, elems);
            if (item == items.begin) {  // K = the first sample, copied to every row of the tile
                Adds(shift, xf, 0.0f, static_cast<int32_t>(stride));
                for (uint64_t r = 1; r < t_.tileRows; r *= 2) {
                    const uint64_t rows = bn::Min(r, t_.tileRows - r);
                    Adds(shift[r * stride], shift, 0.0f, static_cast<int32_t>(rows * stride));
                }
            }
            // Pad lanes are 0 in x and in K: they add nothing.
            Sub(xf, xf, shift, elems);
            Add(sum, sum, xf, elems);
            Mul(xf, xf, xf, elems);
            Add(sq, sq, xf, elems);
        }
        // Fold the rows into row 0: rows [lo, rows) onto [0, rows - lo).
        for (uint64_t rows = bn::Min(t_.tileRows, t_.n); rows > 1;) {
            const uint64_t lo = rows - rows / 2;
            const int32_t count = static_cast<int32_t>((rows - lo) * stride);
            Add(sum, sum, sum[lo * stride], count);
            Add(sq, sq, sq[lo * stride], count);
            rows = lo;
        }
        const int32_t lanes = static_cast<int32_t>(stride);
        Muls(xf, sum, 1.0f / static_cast<float>(t_.n), lanes);  // d_j = s1 / N
        Mul(sum, sum, xf, lanes);                               // s1^2 / N
        Sub(sq, sq, sum, lanes);                                // M2_j
    }

    // From the lanes of unit u (K_j, d_j, M2_j) to the mean and invstd of its
    // channels, written to GM.
    __aicore__ inline void ChannelsOfGroup(uint64_t u) {
        using namespace AscendC;
        const uint64_t c0 = bn::ChannelOfUnit(t_, u) * t_.packGroup;
        const uint64_t g = bn::Min(t_.packGroup, t_.c - c0), len = g * t_.l;
        LocalTensor<float> rows = rowsBuf_.Get<float>(), slots = slotBuf_.Get<float>(), work = workBuf_.Get<float>();
        const uint64_t region = t_.packGroup * kSlotFloats;
        // spreads first hold the sums of d_j
        LocalTensor<float> means = slots, spreads = slots[region], m2s = slots[2 * region], ones = slots[3 * region];

        // Out to GM as [K_j | d_j | M2_j], back as 3g rows of L (K rows, d rows, M2 rows), each 32-byte aligned.
        Handoff<HardEvent::V_MTE3>();
        const DataCopyExtParams lanesOut(1, static_cast<uint32_t>(len * sizeof(float)), 0, 0, 0);
        DataCopyPad(wsGm_, shiftBuf_.Get<float>(), lanesOut);
        DataCopyPad(wsGm_[len], xfBuf_.Get<float>(), lanesOut);
        DataCopyPad(wsGm_[2 * len], sqBuf_.Get<float>(), lanesOut);
        Handoff<HardEvent::MTE3_MTE2>();
        const DataCopyExtParams rowsIn(static_cast<uint16_t>(3 * g), static_cast<uint32_t>(t_.l * sizeof(float)), 0, 0, 0);
        DataCopyPad(rows, wsGm_, rowsIn, DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
        Handoff<HardEvent::MTE2_V>();

        const int32_t l = static_cast<int32_t>(t_.l), slotLanes = static_cast<int32_t>(g * kSlotFloats);
        for (uint64_t c = 0; c < g; ++c) {
            ReduceSum(means[c * kSlotFloats], rows[c * lStride_], work, l);
            ReduceSum(spreads[c * kSlotFloats], rows[(g + c) * lStride_], work, l);
            ReduceSum(m2s[c * kSlotFloats], rows[(2 * g + c) * lStride_], work, l);
        }
        Add(means, means, spreads, slotLanes);
        Muls(means, means, 1.0f / static_cast<float>(t_.l), slotLanes);
        Handoff<HardEvent::V_S>();
        for (uint64_t c = 0; c < g; ++c) {  // sum_j ((K_j - mean) + d_j)^2, each channel's mean read back once
            const LocalTensor<float> k = rows[c * lStride_];
            Adds(k, k, -means.GetValue(c * kSlotFloats), l);
            Add(k, k, rows[(g + c) * lStride_], l);
            Mul(k, k, k, l);
            ReduceSum(spreads[c * kSlotFloats], k, work, l);
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
        // Each slot's first float is one channel's result: one 4-byte block per 32-byte UB block.
        Handoff<HardEvent::V_MTE3>();
        const DataCopyExtParams outParams(static_cast<uint16_t>(g), sizeof(float), 0, 0, 0);
        DataCopyPad(meanGm_[c0], means, outParams);
        DataCopyPad(invstdGm_[c0], m2s, outParams);
        // The next unit rewrites the lanes and slots these copies read, and the
        // slots the scalar reads above read.
        Handoff<HardEvent::MTE3_V>();
        Handoff<HardEvent::S_V>();
    }

    // The pipe of E's second half waits for everything its first half has issued.
    template <AscendC::HardEvent E>
    __aicore__ inline void Handoff() {
        using namespace AscendC;
        const TEventID id = GetTPipePtr()->FetchEventID(E);
        SetFlag<E>(id);
        WaitFlag<E>(id);
    }

    AscendC::TPipe pipe_;
    AscendC::TQue<AscendC::QuePosition::VECIN, bn::BUFFER_NUM> inQueue_;
    AscendC::TBuf<AscendC::QuePosition::VECCALC> xfBuf_, shiftBuf_, sumBuf_, sqBuf_, workBuf_, rowsBuf_, slotBuf_;
    AscendC::GlobalTensor<T> xGm_;
    AscendC::GlobalTensor<float> meanGm_, invstdGm_, wsGm_;
    BnRowTiling t_;
    float eps_ = 0.0f;
    uint64_t lStride_ = 0;
    bn::ItemRange units_;
};

#endif  // NPU_SYNCBN_BATCH_NORM_STATS_PACKED_H

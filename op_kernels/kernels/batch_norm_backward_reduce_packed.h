/*
 * batch_norm_backward_reduce on short rows (the packed layout of
 * include/batch_norm_tiling.h): the outputs of KernelBatchNormBackwardReduce
 * (sum_dy, sum_dy_xmu, grad_weight, grad_bias, each when outputMask asks) for
 * small L (7x7 and 14x14 planes), where one burst per (sample, channel) row
 * of dy and of x would be a few hundred bytes and every channel would end in
 * its own scalar read-back.
 *
 * A unit is a group of G channels with all N samples; a tile is `rows`
 * samples of the group's G*L contiguous elements of dy and of x. The sums run
 * per lane j of the group: sum(dy) and sum(dy * (x - mean_j)), mean_j the
 * mean of lane j's channel. That lane vector is built once a unit: each
 * channel's mean fills its own 32-byte aligned row of L, and the rows go out
 * to this core's workspace and come back as the G*L lanes. At the unit's end
 * the two lane sums go out and come back as one aligned row of L per channel
 * (bn::PackedLanes), and each row is reduced.
 */
#ifndef NPU_SYNCBN_BATCH_NORM_BACKWARD_REDUCE_PACKED_H
#define NPU_SYNCBN_BATCH_NORM_BACKWARD_REDUCE_PACKED_H

#include "bn_packed.h"
#include "bn_reduce_gm.h"

template <typename T>
class KernelBatchNormBackwardReducePacked {
public:
    __aicore__ inline KernelBatchNormBackwardReducePacked() {}

    __aicore__ inline void Init(GM_ADDR dy, GM_ADDR x, GM_ADDR mean, GM_ADDR invstd, GM_ADDR sumDy,
                                GM_ADDR sumDyXmu, GM_ADDR gradWeight, GM_ADDR gradBias, GM_ADDR workspace,
                                const BnBackwardReduceTiling& tiling) {
        using namespace AscendC;
        t_ = tiling.rows;
        mask_ = tiling.outputMask;
        units_ = bn::CoreUnits(t_, GetBlockIdx());
        gm_.Bind(dy, x, mean, invstd, sumDy, sumDyXmu, gradWeight, gradBias, t_, mask_);

        const uint32_t tileT = static_cast<uint32_t>(t_.tileElems * sizeof(T));
        const uint32_t rowFloats = static_cast<uint32_t>(t_.tileStride * sizeof(float));
        pipe_.InitBuffer(dyQueue_, bn::BUFFER_NUM, tileT);
        pipe_.InitBuffer(xQueue_, bn::BUFFER_NUM, tileT);
        pipe_.InitBuffer(dyfBuf_, rowFloats);
        pipe_.InitBuffer(xfBuf_, rowFloats);
        pipe_.InitBuffer(accDyBuf_, rowFloats);
        pipe_.InitBuffer(accXmuBuf_, rowFloats);
        pipe_.InitBuffer(meanLanesBuf_, rowFloats);
        lanes_.Init(pipe_, t_, workspace, BN_PACKED_REDUCE_ROWS);
    }

    __aicore__ inline void Process() {
        if (units_.begin < units_.end) CopyIn(bn::TileOfItem<T>(t_, bn::ItemsOfUnit(t_, units_.begin).begin));
        for (uint64_t u = units_.begin; u < units_.end; ++u) {
            const uint64_t c0 = bn::ChannelOfUnit(t_, u) * t_.packGroup;
            const uint64_t g = bn::Min(t_.packGroup, t_.c - c0);
            MeanLanes(c0, g);
            SumLanesOfGroup(u);
            ChannelsOfGroup(c0, g);
        }
    }

private:
    __aicore__ inline void CopyIn(const bn::Tile& tile) {
        bn::EnQueTile(dyQueue_, gm_.dy, t_, tile);
        bn::EnQueTile(xQueue_, gm_.x, t_, tile);
    }

    // mean_j of channels [c0, c0 + g) in the lane buffer; invstd of those
    // channels in its slots for grad_weight.
    __aicore__ inline void MeanLanes(uint64_t c0, uint64_t g) {
        using namespace AscendC;
        LocalTensor<float> means = lanes_.Slots(0), rows = lanes_.rows.Get<float>();
        lanes_.SlotsIn(means, gm_.mean, c0, g);
        if (mask_ & BN_OUT_GRAD_WEIGHT) lanes_.SlotsIn(lanes_.Slots(1), gm_.invstd, c0, g);
        bn::Handoff<HardEvent::MTE2_S>();
        for (uint64_t c = 0; c < g; ++c) {
            Duplicate(rows[c * lanes_.lStride], means.GetValue(c * BN_PACKED_SLOT_FLOATS), static_cast<int32_t>(t_.l));
        }
        lanes_.RowsToLanes(meanLanesBuf_.Get<float>(), g);
    }

    // Per-lane sums of dy and dy * (x - mean_j) over all samples, a sample row
    // at a time (the float buffers are one row: the tiles of T get the UB).
    __aicore__ inline void SumLanesOfGroup(uint64_t u) {
        using namespace AscendC;
        const bn::ItemRange items = bn::ItemsOfUnit(t_, u);
        LocalTensor<float> dyf = dyfBuf_.Get<float>(), xf = xfBuf_.Get<float>();
        LocalTensor<float> accDy = accDyBuf_.Get<float>(), accXmu = accXmuBuf_.Get<float>();
        LocalTensor<float> meanLanes = meanLanesBuf_.Get<float>();
        const int32_t lanes = static_cast<int32_t>(bn::TileOfItem<T>(t_, items.begin).stride);
        Duplicate(accDy, 0.0f, lanes);
        Duplicate(accXmu, 0.0f, lanes);
        for (uint64_t item = items.begin; item < items.end; ++item) {
            const bn::Tile tile = bn::TileOfItem<T>(t_, item);
            uint64_t next = 0;
            if (bn::NextItem(t_, units_, u, item, next)) CopyIn(bn::TileOfItem<T>(t_, next));
            LocalTensor<T> dy = dyQueue_.template DeQue<T>(), x = xQueue_.template DeQue<T>();
            for (uint64_t r = 0; r < tile.rows; ++r) {
                const LocalTensor<float> dyRow = bn::AsFloat(dyf, dy[r * tile.stride], lanes);
                bn::SubAsFloat(xf, x[r * tile.stride], meanLanes, lanes);
                Mul(xf, xf, dyRow, lanes);
                Add(accDy, accDy, dyRow, lanes);
                Add(accXmu, accXmu, xf, lanes);
            }
            dyQueue_.FreeTensor(dy);
            xQueue_.FreeTensor(x);
        }
    }

    // Channels [c0, c0 + g): the lane sums realigned per channel, reduced, written.
    __aicore__ inline void ChannelsOfGroup(uint64_t c0, uint64_t g) {
        using namespace AscendC;
        LocalTensor<float> accDy = accDyBuf_.Get<float>(), accXmu = accXmuBuf_.Get<float>();
        lanes_.LanesToRows(accDy, accXmu, accXmu, g, BN_PACKED_REDUCE_ROWS);
        LocalTensor<float> invstd = lanes_.Slots(1), sumDy = lanes_.Slots(2), sumXmu = lanes_.Slots(3);
        lanes_.ReduceRows(sumDy, 0, g);
        lanes_.ReduceRows(sumXmu, g, g);
        const int32_t slotLanes = static_cast<int32_t>(g * BN_PACKED_SLOT_FLOATS);
        if (mask_ & BN_OUT_GRAD_WEIGHT) Mul(invstd, invstd, sumXmu, slotLanes);
        bn::Handoff<HardEvent::V_MTE3>();
        if (mask_ & BN_OUT_SUMS) {
            lanes_.SlotsOut(gm_.sumDy, sumDy, c0, g);
            lanes_.SlotsOut(gm_.sumDyXmu, sumXmu, c0, g);
        }
        if (mask_ & BN_OUT_GRAD_BIAS) lanes_.SlotsOut(gm_.gradBias, sumDy, c0, g);
        if (mask_ & BN_OUT_GRAD_WEIGHT) lanes_.SlotsOut(gm_.gradWeight, invstd, c0, g);
        lanes_.EndUnit();
    }

    AscendC::TPipe pipe_;
    AscendC::TQue<AscendC::QuePosition::VECIN, bn::BUFFER_NUM> dyQueue_, xQueue_;
    AscendC::TBuf<AscendC::QuePosition::VECCALC> dyfBuf_, xfBuf_, accDyBuf_, accXmuBuf_, meanLanesBuf_;
    bn::PackedLanes lanes_;
    bn::ReduceGm<T> gm_;
    BnRowTiling t_;
    uint32_t mask_ = 0;
    bn::ItemRange units_;
};

#endif  // NPU_SYNCBN_BATCH_NORM_BACKWARD_REDUCE_PACKED_H

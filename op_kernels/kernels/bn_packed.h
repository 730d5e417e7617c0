/*
 * Kernel-side helpers of the packed layout (include/batch_norm_tiling.h,
 * packGroup > 0), shared by the packed stats and backward_reduce kernels.
 *
 * A group's G channels lie side by side in a sample's G*L lanes, so a channel
 * starts mid-block whenever L is not a multiple of 8 floats, and vector
 * instructions only start on 32-byte blocks. The way between the two
 * layouts is a round trip through this core's workspace rows in GM:
 * DataCopyPad writes exactly the bytes asked for, and lands each block it
 * reads 32-byte aligned in UB. Per-channel results live in *slots*: 8 floats
 * a channel, the first holding the value, so that a per-channel vector in GM
 * moves to and from slots with one copy of 4-byte blocks.
 */
#ifndef NPU_SYNCBN_BN_PACKED_H
#define NPU_SYNCBN_BN_PACKED_H

#include "bn_common.h"

namespace bn {

struct PackedLanes {
    TBuf<QuePosition::VECCALC> rows, slots, work;
    GlobalTensor<float> ws;  // this core's workspace rows
    uint64_t l = 0, group = 0, lStride = 0, workElems = 0;

    // UB and workspace of host/tiling.cpp PackedFixedBytes / BnPackedWorkspaceStride for rowSets row sets.
    __aicore__ inline void Init(TPipe& pipe, const BnRowTiling& t, GM_ADDR workspace, uint64_t rowSets) {
        l = t.l;
        group = t.packGroup;
        lStride = AlignUp(l, 8);
        workElems = t.reduceWorkElems;
        const uint64_t wsFloats = AlignUp(rowSets * group * l * 4, 512) / 4;
        ws.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(workspace) + GetBlockIdx() * wsFloats, wsFloats);
        pipe.InitBuffer(work, static_cast<uint32_t>(workElems * sizeof(float)));
        pipe.InitBuffer(rows, static_cast<uint32_t>(AlignUp(rowSets * group * lStride * 4, BLOCK_BYTES)));
        pipe.InitBuffer(slots, static_cast<uint32_t>(BN_PACKED_SLOTS * group * BN_PACKED_SLOT_FLOATS * sizeof(float)));
    }

    __aicore__ inline LocalTensor<float> Slots(uint64_t region) {
        return slots.Get<float>()[region * group * BN_PACKED_SLOT_FLOATS];
    }

    // gm[c0, c0 + g) into / out of g slots: one 4-byte block each.
    __aicore__ inline void SlotsIn(const LocalTensor<float>& dst, const GlobalTensor<float>& gm, uint64_t c0, uint64_t g) {
        const DataCopyExtParams p(static_cast<uint16_t>(g), sizeof(float), 0, 0, 0);
        DataCopyPad(dst, gm[c0], p, DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
    }

    __aicore__ inline void SlotsOut(const GlobalTensor<float>& gm, const LocalTensor<float>& src, uint64_t c0, uint64_t g) {
        DataCopyPad(gm[c0], src, DataCopyExtParams(static_cast<uint16_t>(g), sizeof(float), 0, 0, 0));
    }

    // The first g*L lanes of each of `sets` lane vectors, back as sets*g rows
    // of L (set-major), each 32-byte aligned in `rows`.
    __aicore__ inline void LanesToRows(const LocalTensor<float>& a, const LocalTensor<float>& b,
                                       const LocalTensor<float>& c, uint64_t g, uint64_t sets) {
        const uint64_t len = g * l;
        const DataCopyExtParams out(1, static_cast<uint32_t>(len * sizeof(float)), 0, 0, 0);
        Handoff<HardEvent::V_MTE3>();
        DataCopyPad(ws, a, out);
        DataCopyPad(ws[len], b, out);
        if (sets > 2) DataCopyPad(ws[2 * len], c, out);
        Handoff<HardEvent::MTE3_MTE2>();
        Handoff<HardEvent::V_MTE2>();  // rows: last written by V (the twin does not chain V -> MTE3 -> MTE2)
        const DataCopyExtParams in(static_cast<uint16_t>(sets * g), static_cast<uint32_t>(l * sizeof(float)), 0, 0, 0);
        DataCopyPad(rows.Get<float>(), ws, in, DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
        Handoff<HardEvent::MTE2_V>();
    }

    // The first g rows of `rows` back as g*L lanes in dst.
    __aicore__ inline void RowsToLanes(const LocalTensor<float>& dst, uint64_t g) {
        Handoff<HardEvent::V_MTE3>();
        DataCopyPad(ws, rows.Get<float>(), DataCopyExtParams(static_cast<uint16_t>(g), static_cast<uint32_t>(l * 4), 0, 0, 0));
        Handoff<HardEvent::MTE3_MTE2>();
        Handoff<HardEvent::V_MTE2>();  // dst: last read and written by V
        const DataCopyExtParams in(1, static_cast<uint32_t>(g * l * sizeof(float)), 0, 0, 0);
        DataCopyPad(dst, ws, in, DataCopyPadExtParams<float>(false, 0, 0, 0.0f));
        Handoff<HardEvent::MTE2_V>();
    }

    // Slot c of dst = the sum of row first + c, for c < g.
    __aicore__ inline void ReduceRows(const LocalTensor<float>& dst, uint64_t first, uint64_t g) {
        LocalTensor<float> r = rows.Get<float>(), w = work.Get<float>();
        for (uint64_t c = 0; c < g; ++c) {
            ReduceSum(dst[c * BN_PACKED_SLOT_FLOATS], r[(first + c) * lStride], w, static_cast<int32_t>(l));
        }
    }

    // A unit's end: its output copies (MTE3) and vector work have read the
    // lanes and slots that the next unit's vector work and slot copies (MTE2)
    // rewrite, and the scalar reads of slots come before the next vector writes.
    __aicore__ inline void EndUnit() {
        Handoff<HardEvent::MTE3_V>();
        Handoff<HardEvent::MTE3_MTE2>();
        Handoff<HardEvent::V_MTE2>();
        Handoff<HardEvent::S_V>();
    }
};

}  // namespace bn

#endif  // NPU_SYNCBN_BN_PACKED_H

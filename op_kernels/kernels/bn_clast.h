/*
 * Kernel-side helpers of the C-last path (include/batch_norm_tiling.h,
 * BnClastTiling): the rows of a core, the channel chunks, the tile copies
 * (one DataCopyPad per tile, one burst of a chunk's channels per row), the
 * broadcast of a per-channel vector over the rows of a tile, and the fold of
 * per-row accumulators into their first row. The kernels keep every vector op
 * at tile size: per-channel values are broadcast once per chunk into tiles, so
 * a tile costs the same handful of vector ops as on the row path.
 */
#ifndef NPU_SYNCBN_BN_CLAST_H
#define NPU_SYNCBN_BN_CLAST_H

#include "bn_common.h"

namespace bn {

struct RowRange {
    uint64_t begin;
    uint64_t count;
};

// Rows of core k: rowsBase each, one more for the first rowsRem cores.
__aicore__ inline RowRange CoreRows(const BnClastTiling& t, uint64_t k) {
    RowRange r;
    r.begin = k * t.rowsBase + Min(k, t.rowsRem);
    r.count = t.rowsBase + (k < t.rowsRem ? 1 : 0);
    return r;
}

// Channels [c0, c0 + len) of chunk j; UB rows of its tiles are `stride` elements apart.
struct Chunk {
    uint64_t c0;
    uint64_t len;
    uint64_t stride;
};

template <typename T>
__aicore__ inline Chunk ChunkOf(const BnClastTiling& t, uint64_t j) {
    Chunk ch;
    ch.c0 = j * t.chanChunk;
    ch.len = Min(t.chanChunk, t.c - ch.c0);
    ch.stride = AlignUp(ch.len, BLOCK_BYTES / sizeof(T));
    return ch;
}

// Rows [row0, row0 + rows) x channels of `ch` from (R, C) GM into UB, rows
// ch.stride apart, pad lanes 0: one burst of ch.len elements per row.
template <typename T>
__aicore__ inline void CopyRowsIn(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const BnClastTiling& t,
                                  const Chunk& ch, uint64_t row0, uint64_t rows) {
    DataCopyExtParams p(static_cast<uint16_t>(rows), static_cast<uint32_t>(ch.len * sizeof(T)),
                        static_cast<uint32_t>((t.c - ch.len) * sizeof(T)), 0, 0);
    DataCopyPadExtParams<T> pad(true, 0, static_cast<uint8_t>(ch.stride - ch.len), ScalarOf<T>(0.0f));
    DataCopyPad(dst, src[row0 * t.c + ch.c0], p, pad);
}

template <typename T>
__aicore__ inline void CopyRowsOut(const GlobalTensor<T>& dst, const LocalTensor<T>& src, const BnClastTiling& t,
                                   const Chunk& ch, uint64_t row0, uint64_t rows) {
    DataCopyExtParams p(static_cast<uint16_t>(rows), static_cast<uint32_t>(ch.len * sizeof(T)), 0,
                        static_cast<uint32_t>((t.c - ch.len) * sizeof(T)), 0);
    DataCopyPad(dst[row0 * t.c + ch.c0], src, p);
}

template <typename T, typename Q>
__aicore__ inline void EnQueRows(Q& q, const GlobalTensor<T>& src, const BnClastTiling& t, const Chunk& ch,
                                 uint64_t row0, uint64_t rows) {
    LocalTensor<T> dst = q.template AllocTensor<T>();
    CopyRowsIn(dst, src, t, ch, row0, rows);
    q.EnQue(dst);
}

template <typename T, typename Q>
__aicore__ inline void DeQueRowsOut(const GlobalTensor<T>& dst, Q& q, const BnClastTiling& t, const Chunk& ch,
                                    uint64_t row0, uint64_t rows) {
    LocalTensor<T> src = q.template DeQue<T>();
    CopyRowsOut(dst, src, t, ch, row0, rows);
    q.FreeTensor(src);
}

// dst rows [0, rows) = the `stride` floats of vec, by doubling: log2(rows) copies.
__aicore__ inline void BroadcastRows(const LocalTensor<float>& dst, const LocalTensor<float>& vec, uint64_t stride,
                                     uint64_t rows) {
    Adds(dst, vec, 0.0f, static_cast<int32_t>(stride));
    for (uint64_t have = 1; have < rows; have *= 2) {
        const uint64_t n = Min(have, rows - have);
        Adds(dst[have * stride], dst, 0.0f, static_cast<int32_t>(n * stride));
    }
}

// acc rows [0, rows) summed lane-wise into row 0 by halving (operands never overlap).
__aicore__ inline void FoldRows(const LocalTensor<float>& acc, uint64_t stride, uint64_t rows) {
    while (rows > 1) {
        const uint64_t half = (rows + 1) / 2;
        Add(acc, acc, acc[half * stride], static_cast<int32_t>((rows - half) * stride));
        rows = half;
    }
}

}  // namespace bn

#endif  // NPU_SYNCBN_BN_CLAST_H

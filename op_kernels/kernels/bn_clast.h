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

// Channels [c0, c0 + len) of chunk j. A UB stride of `stride` elements holds
// `group` rows: one padded row (group 1), or group packed rows of a tile that
// moves as one burst (BnClastTiling::rowGroup; then the chunk is all of C).
struct Chunk {
    uint64_t c0;
    uint64_t len;
    uint64_t stride;
    uint64_t group;
};

template <typename T>
__aicore__ inline Chunk ChunkOf(const BnClastTiling& t, uint64_t j) {
    Chunk ch;
    ch.c0 = j * t.chanChunk;
    ch.len = Min(t.chanChunk, t.c - ch.c0);
    ch.group = t.rowGroup;
    ch.stride = ch.group > 1 ? t.chunkStride : AlignUp(ch.len, BLOCK_BYTES / sizeof(T));
    return ch;
}

// UB strides that `rows` rows occupy, and the lanes the vector ops cover.
__aicore__ inline uint64_t Strides(const Chunk& ch, uint64_t rows) { return CeilDiv(rows, ch.group); }
__aicore__ inline int32_t Lanes(const Chunk& ch, uint64_t rows) {
    return static_cast<int32_t>(ch.group > 1 ? rows * ch.len : rows * ch.stride);
}

// Whether a tile's rows are one contiguous run in GM and in UB: packed rows,
// or a chunk of all C channels whose rows fill whole 32-byte blocks (C = 64
// in float16: one 4 KiB burst for 32 rows instead of 32 bursts of 128 B).
__aicore__ inline bool OneBurst(const BnClastTiling& t, const Chunk& ch) {
    return ch.group > 1 || (ch.len == t.c && ch.stride == ch.len);
}

// The GM side of a tile copy: one block of rows * len elements when the rows
// are contiguous (OneBurst), else `rows` blocks of len elements, C elements apart.
template <typename T>
__aicore__ inline DataCopyExtParams RowBlocks(const BnClastTiling& t, const Chunk& ch, uint64_t rows, bool in) {
    const bool one = OneBurst(t, ch);
    const uint64_t blocks = one ? 1 : rows;
    const uint64_t len = one ? rows * ch.len : ch.len;
    const uint32_t gap = static_cast<uint32_t>((t.c - ch.len) * sizeof(T));
    return DataCopyExtParams(static_cast<uint16_t>(blocks), static_cast<uint32_t>(len * sizeof(T)), in ? gap : 0,
                             in ? 0 : gap, 0);
}

// Rows [row0, row0 + rows) x channels of `ch` from (R, C) GM into UB, pad lanes
// 0: one burst of ch.len elements per row, or one of the whole tile (OneBurst).
template <typename T>
__aicore__ inline void CopyRowsIn(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const BnClastTiling& t,
                                  const Chunk& ch, uint64_t row0, uint64_t rows) {
    const DataCopyExtParams p = RowBlocks<T>(t, ch, rows, true);
    const uint64_t len = p.blockLen / sizeof(T);
    const uint8_t right = static_cast<uint8_t>(AlignUp(len, BLOCK_BYTES / sizeof(T)) - len);
    DataCopyPadExtParams<T> pad(true, 0, right, ScalarOf<T>(0.0f));
    DataCopyPad(dst, src[row0 * t.c + ch.c0], p, pad);
}

template <typename T>
__aicore__ inline void CopyRowsOut(const GlobalTensor<T>& dst, const LocalTensor<T>& src, const BnClastTiling& t,
                                   const Chunk& ch, uint64_t row0, uint64_t rows) {
    DataCopyPad(dst[row0 * t.c + ch.c0], src, RowBlocks<T>(t, ch, rows, false));
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

// dst = the per-channel floats of vec (ch.len valid lanes) for `rows` rows of
// a tile: the first stride filled (packed: vec repeated group times, by scalar
// copies between barriers; the packed offsets are not 32-byte aligned), then
// doubled: log2(strides) vector copies.
__aicore__ inline void BroadcastRows(const LocalTensor<float>& dst, const LocalTensor<float>& vec, const Chunk& ch,
                                     uint64_t rows) {
    const uint64_t strides = Strides(ch, rows);
    if (ch.group > 1) {
        Adds(dst, vec, 0.0f, static_cast<int32_t>(ch.len));
        PipeBarrier<PIPE_ALL>();
        for (uint64_t j = 1; j < ch.group; ++j) {
            for (uint64_t c = 0; c < ch.len; ++c) dst.SetValue(j * ch.len + c, dst.GetValue(c));
        }
        PipeBarrier<PIPE_ALL>();
    } else {
        Adds(dst, vec, 0.0f, static_cast<int32_t>(ch.stride));
    }
    for (uint64_t have = 1; have < strides; have *= 2) {
        const uint64_t n = Min(have, strides - have);
        Adds(dst[have * ch.stride], dst, 0.0f, static_cast<int32_t>(n * ch.stride));
    }
}

// The first `lanes` lanes of a tile (Lanes(ch, rows)) folded into its first
// stride by vector adds: whole strides halved (operands never overlap), then a
// partial last stride (packed rows) added with its own count, so lanes past
// the tile's rows never join. Returns the lanes of the first stride that hold
// sums: min(lanes, stride).
__aicore__ inline int32_t FoldStrides(const LocalTensor<float>& buf, const Chunk& ch, int32_t lanes) {
    uint64_t strides = uint64_t(lanes) / ch.stride;
    const uint64_t rem = uint64_t(lanes) % ch.stride;
    if (strides == 0) return lanes;
    if (rem) Add(buf, buf, buf[strides * ch.stride], static_cast<int32_t>(rem));
    while (strides > 1) {
        const uint64_t half = (strides + 1) / 2;
        Add(buf, buf, buf[half * ch.stride], static_cast<int32_t>((strides - half) * ch.stride));
        strides = half;
    }
    return static_cast<int32_t>(ch.stride);
}

// Per-lane sums over `rows` rows folded into the first ch.len lanes: whole
// strides folded (FoldStrides), then, when packed, the group rows of the first
// stride added by scalar (their offsets are not aligned).
__aicore__ inline void FoldRows(const LocalTensor<float>& acc, const Chunk& ch, uint64_t rows) {
    FoldStrides(acc, ch, static_cast<int32_t>(Strides(ch, rows) * ch.stride));
    if (ch.group > 1) {
        PipeBarrier<PIPE_ALL>();
        for (uint64_t c = 0; c < ch.len; ++c) {
            float sum = acc.GetValue(c);
            for (uint64_t j = 1; j < ch.group; ++j) sum += acc.GetValue(j * ch.len + c);
            acc.SetValue(c, sum);
        }
        PipeBarrier<PIPE_ALL>();
    }
}

}  // namespace bn

#endif  // NPU_SYNCBN_BN_CLAST_H

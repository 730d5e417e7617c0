/*
 * Kernel-side helpers shared by the batch-norm kernels: reading the tiling
 * struct, the item -> core and item -> tile maps of the row tiling
 * (include/batch_norm_tiling.h), and the tile / per-channel copies.
 */
#ifndef NPU_SYNCBN_BN_COMMON_H
#define NPU_SYNCBN_BN_COMMON_H

#include "kernel_operator.h"
#include "batch_norm_tiling.h"

namespace bn {

using namespace AscendC;

constexpr uint32_t BLOCK_BYTES = 32;
constexpr int32_t BUFFER_NUM = 2;  // double buffering: tile i+1 moves in while tile i computes

__aicore__ inline uint64_t Min(uint64_t a, uint64_t b) { return a < b ? a : b; }
__aicore__ inline uint64_t CeilDiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }
__aicore__ inline uint64_t AlignUp(uint64_t a, uint64_t b) { return CeilDiv(a, b) * b; }

// The tiling arrives as bytes in GM; copy it word by word into a local struct.
template <typename Tiling>
__aicore__ inline void LoadTiling(Tiling& dst, GM_ADDR src) {
    static_assert(sizeof(Tiling) % 4 == 0, "tiling structs are made of 32-bit words");
    uint32_t* d = reinterpret_cast<uint32_t*>(&dst);
    __gm__ uint32_t* s = reinterpret_cast<__gm__ uint32_t*>(src);
    for (uint32_t i = 0; i < sizeof(Tiling) / 4; ++i) d[i] = s[i];
}

struct ItemRange {
    uint64_t begin;
    uint64_t end;
};

// Items [begin, end) of core k: itemsBase each, one more for the first itemsRem cores.
__aicore__ inline ItemRange CoreItems(const BnRowTiling& t, uint64_t k) {
    const uint64_t begin = k * t.itemsBase + Min(k, t.itemsRem);
    return {begin, begin + t.itemsBase + (k < t.itemsRem ? 1 : 0)};
}

__aicore__ inline uint64_t CoreOfItem(const BnRowTiling& t, uint64_t item) {
    const uint64_t big = t.itemsBase + 1;
    const uint64_t split = t.itemsRem * big;
    return item < split ? item / big : t.itemsRem + (item - split) / t.itemsBase;
}

__aicore__ inline uint64_t ChannelOfItem(const BnRowTiling& t, uint64_t item) { return item / t.tilesPerChannel; }

// First / last core working on channel c.
__aicore__ inline uint64_t FirstCoreOf(const BnRowTiling& t, uint64_t c) { return CoreOfItem(t, c * t.tilesPerChannel); }
__aicore__ inline uint64_t LastCoreOf(const BnRowTiling& t, uint64_t c) { return CoreOfItem(t, (c + 1) * t.tilesPerChannel - 1); }

// One tile: rows [row0, row0 + rows) x columns [col0, col0 + len) of one channel.
struct Tile {
    uint64_t channel;
    uint64_t row0;
    uint64_t rows;
    uint64_t col0;
    uint64_t len;
    uint64_t stride;    // UB row stride (elements of T): len rounded up to 32 bytes
    uint64_t gmOffset;  // element offset of the tile's first element
};

template <typename T>
__aicore__ inline Tile TileOfItem(const BnRowTiling& t, uint64_t item) {
    Tile tile;
    tile.channel = item / t.tilesPerChannel;
    const uint64_t r = item % t.tilesPerChannel;
    tile.row0 = (r / t.lChunks) * t.tileRows;
    tile.rows = Min(t.tileRows, t.n - tile.row0);
    tile.col0 = (r % t.lChunks) * t.tileLen;
    tile.len = Min(t.tileLen, t.l - tile.col0);
    tile.stride = AlignUp(tile.len, BLOCK_BYTES / sizeof(T));
    tile.gmOffset = (tile.row0 * t.c + tile.channel) * t.l + tile.col0;
    return tile;
}

// GM -> UB copy of a tile, rows `stride` apart in UB. Whole 32-byte rows go with
// DataCopy; a row with a ragged end uses DataCopyPad, its pad lanes set to padValue.
template <typename T>
__aicore__ inline void CopyTileIn(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const BnRowTiling& t,
                                  const Tile& tile, T padValue) {
    const uint64_t rowGap = (t.c * t.l - tile.len) * sizeof(T);  // bytes between rows of one channel in GM
    const bool aligned = tile.len == tile.stride;
    if (aligned && tile.rows == 1) {
        DataCopy(dst, src[tile.gmOffset], static_cast<uint32_t>(tile.len));
    } else if (aligned && rowGap / BLOCK_BYTES <= 65535 && tile.len * sizeof(T) / BLOCK_BYTES <= 65535) {
        DataCopyParams p(static_cast<uint16_t>(tile.rows), static_cast<uint16_t>(tile.len * sizeof(T) / BLOCK_BYTES),
                         static_cast<uint16_t>(rowGap / BLOCK_BYTES), 0);
        DataCopy(dst, src[tile.gmOffset], p);
    } else {
        DataCopyExtParams p(static_cast<uint16_t>(tile.rows), static_cast<uint32_t>(tile.len * sizeof(T)),
                            static_cast<uint32_t>(rowGap), 0, 0);
        DataCopyPadExtParams<T> pad(true, 0, static_cast<uint8_t>(tile.stride - tile.len), padValue);
        DataCopyPad(dst, src[tile.gmOffset], p, pad);
    }
}

// UB -> GM copy of a tile (only the `len` valid elements of each row are written).
template <typename T>
__aicore__ inline void CopyTileOut(const GlobalTensor<T>& dst, const LocalTensor<T>& src, const BnRowTiling& t,
                                   const Tile& tile) {
    const uint64_t rowGap = (t.c * t.l - tile.len) * sizeof(T);
    if (tile.len == tile.stride && tile.rows == 1) {
        DataCopy(dst[tile.gmOffset], src, static_cast<uint32_t>(tile.len));
    } else {
        DataCopyExtParams p(static_cast<uint16_t>(tile.rows), static_cast<uint32_t>(tile.len * sizeof(T)), 0,
                            static_cast<uint32_t>(rowGap), 0);
        DataCopyPad(dst[tile.gmOffset], src, p);
    }
}

// `count` floats of a per-channel vector from channel c0 into UB (any count).
__aicore__ inline void CopyChannelsIn(const LocalTensor<float>& dst, const GlobalTensor<float>& src, uint64_t c0,
                                      uint64_t count) {
    DataCopyExtParams p(1, static_cast<uint32_t>(count * sizeof(float)), 0, 0, 0);
    DataCopyPadExtParams<float> pad(false, 0, 0, 0.0f);
    DataCopyPad(dst, src[c0], p, pad);
}

__aicore__ inline void CopyChannelsOut(const GlobalTensor<float>& dst, const LocalTensor<float>& src, uint64_t c0,
                                       uint64_t count) {
    DataCopyExtParams p(1, static_cast<uint32_t>(count * sizeof(float)), 0, 0, 0);
    DataCopyPad(dst[c0], src, p);
}

// Widens a T tile to float (a plain copy through Adds for float input).
template <typename T>
__aicore__ inline void ToFloat(const LocalTensor<float>& dst, const LocalTensor<T>& src, uint32_t count) {
    if constexpr (std::is_same<T, float>::value) {
        Adds(dst, src, 0.0f, static_cast<int32_t>(count));
    } else {
        Cast(dst, src, RoundMode::CAST_NONE, count);
    }
}

template <typename T>
__aicore__ inline void FromFloat(const LocalTensor<T>& dst, const LocalTensor<float>& src, uint32_t count) {
    if constexpr (std::is_same<T, float>::value) {
        Adds(dst, src, 0.0f, static_cast<int32_t>(count));
    } else {
        Cast(dst, src, RoundMode::CAST_RINT, count);
    }
}

}  // namespace bn

#endif  // NPU_SYNCBN_BN_COMMON_H

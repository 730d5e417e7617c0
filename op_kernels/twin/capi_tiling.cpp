/*
 * The twin's C ABI, tiling part: the host tilings (host/tiling.cpp) as plain
 * fields for the tests, the kernels' own item maps walked over a tensor
 * (coverage), and the sweep that every valid shape gets a plan.
 */
#include <algorithm>
#include <cstring>
#include <string>

#include "capi_report.h"
#include "../host/tiling.h"
#include "../kernels/bn_common.h"

namespace {

int Refused(int status) {
    twin_capi::SetError(std::string("kernel 'tiling': ") + BnTilingStatusText(status));
    return 2;
}

int Failed(const std::string& why) {
    twin_capi::SetError(why);
    return why.empty() ? 0 : 1;
}

}  // namespace

extern "C" {

// BnClastTiling fields in declaration order, then the UB bytes of op's plan.
int twin_clast_tiling(uint32_t op, uint64_t rows, uint64_t c, uint32_t dtype, uint32_t cores, uint32_t ubBytes,
                      uint64_t* out14) {
    BnClastTiling t{};
    const int st = BnClastTilingFor(static_cast<BnOp>(op), rows, c, dtype, cores, ubBytes, &t);
    if (st != BN_TILING_OK) return Refused(st);
    const uint64_t fields[14] = {t.rows,     t.c,        t.chanChunk, t.chunkStride, t.chunks,
                                 t.tileRows, t.tileElems, t.rowsBase, t.rowsRem,     t.dtype,
                                 t.blockDim, t.countChunk, t.rowGroup, BnClastUbBytes(static_cast<BnOp>(op), t)};
    std::memcpy(out14, fields, sizeof(fields));
    return 0;
}

// ---------------------------------------------------------------- tiling, for tests
// Fields of BnRowTiling in declaration order, then UB bytes and workspace bytes.
int twin_row_tiling(uint32_t op, uint64_t n, uint64_t c, uint64_t l, uint32_t dtype, uint32_t cores,
                    uint32_t ubBytes, uint64_t* out21) {
    BnRowTiling t{};
    const int st = BnRowCutTilingFor(static_cast<BnOp>(op), n, c, l, dtype, cores, ubBytes, &t);
    if (st != BN_TILING_OK) return Refused(st);
    const uint64_t fields[21] = {t.n,        t.c,         t.l,        t.tileRows,        t.tileLen,
                                 t.tileStride, t.tileElems, t.lChunks, t.tilesPerChannel, t.totalItems,
                                 t.unitItems,  t.itemsBase, t.itemsRem, t.dtype,          t.blockDim,
                                 t.paramChunk, t.reduceWorkElems, t.splits, t.packGroup,
                                 BnUbBytes(static_cast<BnOp>(op), t), BnWorkspaceBytes(static_cast<BnOp>(op), t)};
    std::memcpy(out21, fields, sizeof(fields));
    return 0;
}

// Walks every core's items with the kernels' own maps and counts, per element of
// the (N, C, L) tensor, how many tiles cover it. Also checks each tile against
// the tiling: returns 1 with twin_last_error() set if a tile is misaligned in
// UB, has more rows than one DataCopyPad allows, or exceeds the tile buffer.
int twin_tiling_cover(uint32_t op, uint64_t n, uint64_t c, uint64_t l, uint32_t dtype, uint32_t cores,
                      uint32_t ubBytes, uint32_t* hits) {
    BnRowTiling t{};
    const int st = BnRowCutTilingFor(static_cast<BnOp>(op), n, c, l, dtype, cores, ubBytes, &t);
    if (st != BN_TILING_OK) return Refused(st);
    const uint64_t sz = BnDtypeSize(dtype);
    const bool reduces = t.splits != 0;  // units are (part, channel) pairs, else runs of unitItems items
    auto visit = [&](uint64_t item, uint64_t k) -> bool {
        if (!reduces && bn::CoreOfItem(t, item) != k) return Failed("CoreOfItem disagrees with CoreItems"), false;
        const bn::Tile tile = sz == 4 ? bn::TileOfItem<float>(t, item) : bn::TileOfItem<half>(t, item);
        if (tile.stride * sz % 32 != 0) return Failed("UB row stride not 32-byte aligned"), false;
        if (tile.rows > BN_MAX_BLOCK_COUNT) return Failed("tile rows exceed DataCopyPad blockCount"), false;
        if (tile.rows * tile.stride > t.tileElems) return Failed("tile larger than its UB buffer"), false;
        for (uint64_t i = 0; i < tile.rows; ++i) {
            for (uint64_t j = 0; j < tile.len; ++j) ++hits[tile.gmOffset + i * c * l + j];
        }
        return true;
    };
    for (uint64_t k = 0; k < t.blockDim; ++k) {
        const bn::ItemRange u = bn::CoreUnits(t, k);
        if (u.end <= u.begin) return Failed("core " + std::to_string(k) + " has no units");
        const bn::ItemRange r = reduces ? bn::ItemRange{0, 0} : bn::CoreItems(t, k);
        for (uint64_t unit = u.begin; reduces && unit < u.end; ++unit) {
            const bn::ItemRange items = bn::ItemsOfUnit(t, unit);
            if (items.end <= items.begin) return Failed("unit " + std::to_string(unit) + " has no tiles");
            for (uint64_t item = items.begin; item < items.end; ++item) {
                if (!visit(item, k)) return 1;
            }
        }
        for (uint64_t item = r.begin; item < r.end; ++item) {
            if (!visit(item, k)) return 1;
        }
    }
    const uint64_t units = reduces ? uint64_t(t.splits) * bn::Groups(t) : t.totalItems;
    if (bn::CoreUnits(t, t.blockDim - 1).end != units) return Failed("units not all assigned");
    return 0;
}

// The tiling sweep: for every C of cs[0..nc) and every N*L of nls[0..nnl), the
// row tiling (N*L split as (N*L, 1), (1, N*L) and (32, N*L / 32)) and the C-last
// tiling of op must give a plan, within the UB the op may plan (the twin's
// check at launch) and within the copy limits. Returns the number of failures;
// twin_last_error() describes the first.
int twin_tiling_sweep(uint32_t op, uint32_t dtype, uint32_t cores, uint32_t ubBytes, const uint64_t* cs, uint64_t nc,
                      const uint64_t* nls, uint64_t nnl) {
    const BnOp o = static_cast<BnOp>(op);
    const uint64_t planUb = (o == BN_OP_ELEMT_ACT || o == BN_OP_BACKWARD_REDUCE_RELU)
                                ? std::min<uint64_t>(ubBytes, BN_SELECT_UB_BYTES) : ubBytes;
    int failures = 0;
    auto fail = [&](const char* layout, uint64_t n, uint64_t c, uint64_t l, const std::string& why) {
        if (failures++ == 0) {
            twin_capi::SetError(std::string(layout) + " op " + std::to_string(op) + " dtype " + std::to_string(dtype) + " (N " +
                     std::to_string(n) + ", C " + std::to_string(c) + ", L " + std::to_string(l) + "): " + why);
        }
    };
    for (uint64_t i = 0; i < nc; ++i) {
        for (uint64_t j = 0; j < nnl; ++j) {
            const uint64_t c = cs[i], nl = nls[j];
            // (N, L) decompositions of N*L (not the reducing kernels' channel parts)
            const uint64_t n32 = std::min<uint64_t>(nl, 32);
            const uint64_t shapes[3][2] = {{nl, 1}, {1, nl}, {n32, nl / n32}};
            for (const auto& nlPair : shapes) {
                BnRowTiling t{};
                const int st = BnRowCutTilingFor(o, nlPair[0], c, nlPair[1], dtype, cores, ubBytes, &t);
                if (st != BN_TILING_OK) {
                    fail("row", nlPair[0], c, nlPair[1], BnTilingStatusText(st));
                } else if (BnUbBytes(o, t) > planUb) {
                    fail("row", nlPair[0], c, nlPair[1], "UB plan " + std::to_string(BnUbBytes(o, t)) + " bytes");
                } else if (t.tileRows > BN_MAX_BLOCK_COUNT || t.blockDim < 1 || t.blockDim > cores) {
                    fail("row", nlPair[0], c, nlPair[1], "copy or core limits");
                }
            }
            BnClastTiling g{};
            const int st = BnClastTilingFor(o, nl, c, dtype, cores, ubBytes, &g);
            if (st != BN_TILING_OK) {
                fail("C-last", nl, c, 1, BnTilingStatusText(st));
            } else if (BnClastUbBytes(o, g) > planUb) {
                fail("C-last", nl, c, 1, "UB plan " + std::to_string(BnClastUbBytes(o, g)) + " bytes");
            } else if ((g.rowGroup == 1 && g.tileRows > BN_MAX_BLOCK_COUNT) || g.tileRows < 1 ||
                       g.blockDim < 1 || g.blockDim > cores) {
                fail("C-last", nl, c, 1, "copy or core limits");
            }
        }
    }
    return failures;
}

// BnGatherTiling fields: c, world, chanBase, chanRem, blockDim, chunk, countChunk, UB bytes.
int twin_gather_tiling(uint64_t c, uint64_t world, uint32_t cores, uint32_t ubBytes, uint64_t* out8) {
    BnGatherTiling t{};
    const int st = BnGatherTilingFor(c, world, cores, ubBytes, true, true, 0.1f, 1e-5f, &t);
    if (st != BN_TILING_OK) return Refused(st);
    const uint64_t fields[8] = {t.c, t.world, t.chanBase, t.chanRem, t.blockDim, t.chunk, t.countChunk,
                                BnGatherUbBytes(t)};
    std::memcpy(out8, fields, sizeof(fields));
    return 0;
}

}  // extern "C"

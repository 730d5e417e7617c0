// Host tiling of the batch-norm kernels; see tiling.h and include/batch_norm_tiling.h.
#include "tiling.h"

#include <algorithm>
#include <numeric>

namespace {

constexpr uint64_t kBlock = 32;      // bytes of one UB data block
constexpr uint32_t kParamChunk = 256;  // channels of per-channel params held in UB at once
constexpr uint64_t kTilesPerCore = 4;
constexpr uint64_t kMinTileBytes = 8 * 1024;
constexpr uint64_t kMaxCopyStrideBytes = 0xffffffffull;  // DataCopyExtParams::srcStride / dstStride (uint32)

uint64_t CeilDiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }
uint64_t AlignUp(uint64_t a, uint64_t b) { return CeilDiv(a, b) * b; }

// Rows a tile for `rows` rows in tiles of at most `most`: as many tiles, of
// even sizes (32 rows in tiles of up to 27: 16 + 16, not 27 + 5).
uint64_t Balanced(uint64_t rows, uint64_t most) { return CeilDiv(rows, CeilDiv(rows, most)); }

// The reducing kernels never share a channel's running sums between cores: a
// barrier (SyncAll) was tried and dropped. Its hardware form needs a MIX
// kernel, and even then, with the kernel-launch route (ascendc_library +
// ACLRT_LAUNCH_KERNEL) there is no batch schedule mode (`__schedmode__(1)` /
// TilingContext::SetScheduleMode), so two barrier kernels on concurrent
// streams whose blocks together exceed the physical cores can each wait for
// cores the other holds: a deadlock (asc-devkit's SyncAll docs describe
// exactly this). Instead a channel may be cut into parts (ChooseSplits), each
// reduced by one core into a partial result, and the host merges the parts
// with a second launch on the same stream, as the C-last path merges its
// per-core rows.
bool ReducesPerChannel(BnOp op) {
    return op == BN_OP_STATS || op == BN_OP_BACKWARD_REDUCE || op == BN_OP_BACKWARD_REDUCE_RELU;
}

constexpr uint64_t kMaxSplits = BN_MAX_CORES;
constexpr uint64_t kMergeBytes = 96 * 1024;
constexpr uint64_t kMinPartTiles = 2;

// Parts per channel for the reducing kernels: the fewest whose busiest core
// (ceil(units / cores) units of at most ceil(tiles / parts) tiles each) comes
// within 3% of the best over 2..min(tiles / kMinPartTiles, kMaxSplits), if that
// saves the busiest core more than a merge launch's worth of tiles over whole
// channels: more parts cost a merge launch (a kernel start, about 3 us in the
// timing model, a core's share of HBM moving about kMergeBytes) and (parts x C)
// partials. Each part ends in its own lane sums (a ReduceSum of one row and a
// scalar read-back): parts keep kMinPartTiles tiles or more.
uint64_t ChooseSplits(uint64_t c, uint64_t tilesPerChannel, uint64_t tileBytes, uint32_t cores) {
    auto busiest = [&](uint64_t s) { return CeilDiv(s * c, cores) * CeilDiv(tilesPerChannel, s); };
    const uint64_t most = std::min<uint64_t>(tilesPerChannel / kMinPartTiles, kMaxSplits);
    if (most < 2) return 1;
    uint64_t best = busiest(2);
    for (uint64_t s = 3; s <= most; ++s) best = std::min(best, busiest(s));
    if (best + CeilDiv(kMergeBytes, tileBytes) >= busiest(1)) return 1;
    for (uint64_t s = 2;; ++s) {
        if (busiest(s) * 100 <= best * 103) return s;
    }
}

// The fused-activation kernels gate with Compares + Select (bn::ReluGate).
// Compares computes whole 256-byte repeats, so the float tile it reads is
// padded to gateElems and its bit mask holds gateElems bits; Select's scratch
// block on dav-2201 sits at 184 KiB, so their plan stays below it.
bool Gated(BnOp op) { return op == BN_OP_ELEMT_ACT || op == BN_OP_BACKWARD_REDUCE_RELU; }

uint64_t GateMaskBytes(uint64_t gateElems) { return AlignUp(gateElems / 8, kBlock); }

// UB of the gate beyond its per-element share (padding of the compared tile, the mask).
uint64_t GateExtraBytes(BnOp op, uint64_t tileElems) {
    if (!Gated(op)) return 0;
    const uint64_t g = BnGateElems(tileElems);
    return (g - tileElems) * 4 + GateMaskBytes(g);
}

// What the tile solve sets aside for the gate: one byte per element bounds the
// mask, the rest covers the padding and block rounding.
constexpr uint64_t kGateSlackPerElem = 1;
constexpr uint64_t kGateSlackFixed = 63 * 4 + 2 * kBlock;

uint32_t PlanUb(BnOp op, uint32_t ubBytes) {
    return Gated(op) ? std::min<uint32_t>(ubBytes, BN_SELECT_UB_BYTES) : ubBytes;
}

// Float elements of the ReduceSum work buffer, and of its result buffer, for
// `count` floats: one float per 256-byte repeat, rounded up to a 32-byte block
// (the twin checks both sizes). The result buffer is this large on purpose: on
// 910B the count form of ReduceSum sums in the accumulator and stores dst[0],
// but whether its vcadd also stores a partial per repeat at dst is not
// documented, so dst has room for one per repeat (at most 512 B per kernel).
uint64_t ReduceWorkElems(uint64_t count) { return AlignUp(std::max<uint64_t>(CeilDiv(count, 64), 1), 8); }

// backward_reduce widens rows of at least BN_WIDE_ROW_BYTES a row at a time
// (include/batch_norm_tiling.h); shorter rows a tile at a time, where one
// instruction per row would cost more vector time than the bigger tile saves.
bool WidensRows(BnOp op, uint64_t l, uint64_t sz) { return op == BN_OP_BACKWARD_REDUCE && l * sz >= BN_WIDE_ROW_BYTES; }

// Bytes per tile element (rows of l elements of sz bytes): the queues of T
// (double-buffered) plus float work buffers.
uint64_t PerElemBytes(BnOp op, uint64_t sz, uint64_t l) {
    if (WidensRows(op, l, sz)) return 4 * sz;  // dy, x queues (its floats are rows: FloatRows)
    switch (op) {
        case BN_OP_STATS: return 2 * sz + 4;                // x queue; xf
        case BN_OP_ELEMT: return 4 * sz + 4;                // x queue, y queue; xf
        case BN_OP_BACKWARD_REDUCE: return 4 * sz + 2 * 4;  // dy, x queues; dyf, xf
        case BN_OP_BACKWARD_ELEMT: return 6 * sz + 2 * 4;   // dy, x, dx queues; dyf, xf
        case BN_OP_ELEMT_ACT: return 6 * sz + 3 * 4;        // x, residual, y queues; xf, rf, zeros
        case BN_OP_BACKWARD_REDUCE_RELU:                    // dy, y, x queues, grad_sum queue;
            return 8 * sz + 4 * 4;                          // dyf, xf, yf, zeros
    }
    return 0;
}

// Float buffers of one UB row of the tile (tileStride lanes): the reducing
// kernels' accumulators (a tile's rows are added into them lane by lane, its
// pads left out): stats sum(x - K), sum((x - K)^2); backward_reduce(_relu)
// sum(dy), sum(dy * xmu); and backward_reduce's dy and x - mean when it
// widens a row at a time (WidensRows), so that its tiles of T get the UB.
uint64_t FloatRows(BnOp op, uint64_t sz, uint64_t l) {
    return WidensRows(op, l, sz) ? 4 : ReducesPerChannel(op) ? 2 : 0;
}

// Bytes independent of the tile size: per-channel batches, reduce work, scratch.
uint64_t FixedBytes(BnOp op, uint64_t paramChunk, uint64_t reduceWork) {
    const uint64_t chunk = AlignUp(paramChunk * 4, kBlock);
    const uint64_t reduce = 2 * AlignUp(reduceWork * 4, kBlock);  // work + result
    const uint64_t reduce2 = reduce + AlignUp(reduceWork * 4, kBlock);  // work + two results (bn::SumLanes2)
    switch (op) {
        case BN_OP_STATS: return 3 * chunk + reduce2;                 // mean, var, ones
        case BN_OP_ELEMT: return 4 * chunk;                           // weight, bias, mean, invstd
        case BN_OP_BACKWARD_REDUCE: return 4 * chunk + reduce2;       // mean, invstd, sums x2
        case BN_OP_BACKWARD_ELEMT: return 5 * chunk + reduce;  // mean, invstd, weight, sum_dy, sum_dy_xmu
        case BN_OP_ELEMT_ACT: return 4 * chunk;                      // as elemt
        case BN_OP_BACKWARD_REDUCE_RELU: return 4 * chunk + reduce2;  // as backward_reduce
    }
    return 0;
}

// The packed stats layout (include/batch_norm_tiling.h, packGroup): rows
// shorter than this move one sample's group of channels per burst instead.
// Rows the packed kernels take are shorter than these (see Packs). A slot (8
// floats) holds one ReduceSum result of up to 8 repeats: L <= 512.
constexpr uint64_t kPackedStatsRowBytes = 1024;
constexpr uint64_t kPackedReduceRowBytes = 256;

uint64_t PackedRowSets(BnOp op) { return op == BN_OP_STATS ? BN_PACKED_STATS_ROWS : BN_PACKED_REDUCE_ROWS; }

// The packed kernels' tiles are their queues of T (double-buffered): x; dy and x.
uint64_t PackedPerElemBytes(BnOp op, uint64_t sz) { return (op == BN_OP_STATS ? 2 : 4) * sz; }

// Their float buffers of one row (`stride` lanes): stats x, K, sum(x - K),
// sum((x - K)^2); backward_reduce dy, x - mean, mean, sum(dy), sum(dy * xmu).
uint64_t PackedFloatRows(BnOp op) { return op == BN_OP_STATS ? 4 : 5; }

// UB of a packed kernel besides its tiles: the float rows, the ReduceSum work
// buffer (`work` floats), the group's per-lane results re-read as one 32-byte
// aligned row per channel and row set, and the per-channel result slots
// (kernels/bn_packed.h).
uint64_t PackedFixedBytes(BnOp op, uint64_t group, uint64_t l, uint64_t stride, uint64_t work) {
    return PackedFloatRows(op) * AlignUp(stride * 4, kBlock) + AlignUp(work * 4, kBlock) +
           AlignUp(PackedRowSets(op) * group * AlignUp(l, 8) * 4, kBlock) +
           BN_PACKED_SLOTS * group * BN_PACKED_SLOT_FLOATS * 4;
}

// Rows the packed kernels take: under half a granule for backward_reduce (7x7
// planes; its row plan ends each channel in one read-back and overlaps it with
// the next channel's copies, which the timing model finds as fast from 14x14
// float16 on), under 1 KiB for stats (whose row plan reads back twice a channel).
bool Packs(BnOp op, uint64_t c, uint64_t l, uint64_t sz, uint32_t cores) {
    const uint64_t below = op == BN_OP_STATS ? kPackedStatsRowBytes : op == BN_OP_BACKWARD_REDUCE ? kPackedReduceRowBytes : 0;
    return l * sz < below && c >= cores;
}

}  // namespace

const char* BnTilingStatusText(int status) {
    switch (status) {
        case BN_TILING_OK: return "ok";
        case BN_TILING_EMPTY: return "empty input (a zero dimension)";
        case BN_TILING_BAD_CORES: return "core count must be in 1..48";
        case BN_TILING_BAD_DTYPE: return "dtype must be float32, float16 or bfloat16";
        case BN_TILING_UB_TOO_SMALL: return "UB too small for one 32-byte row";
        case BN_TILING_BAD_WORLD: return "count tensor must have at least one element";
    }
    return "unknown tiling status";
}

uint32_t BnGateElems(uint64_t tileElems) { return static_cast<uint32_t>(AlignUp(tileElems, 64)); }

uint32_t BnDtypeSize(uint32_t dtype) {
    switch (dtype) {
        case BN_FLOAT32: return 4;
        case BN_FLOAT16: return 2;
        case BN_BFLOAT16: return 2;
    }
    return 0;
}

namespace {

// The packed plan, if one fits and balances. Groups of ceil(C / cores)
// channels (their re-read rows each one copy's blocks), or halvings of that:
// the one whose busiest core pays least for its copies, each costing its bytes
// (whole granules) plus about kCopyCostBytes of start-up (118 ns at a core's
// share of HBM), so long rows of many channels, which leave the UB room for
// one sample a tile, may lose to more, smaller groups. Samples per tile: as
// many as fit, but about kTilesPerCore tiles a core (copy-in overlaps compute).
constexpr uint64_t kCopyCostBytes = 4096;

bool PackedTiling(BnOp op, uint64_t n, uint64_t c, uint64_t l, uint32_t dtype, uint32_t cores, uint32_t ubBytes,
                  BnRowTiling* out) {
    const uint64_t sz = BnDtypeSize(dtype), epb = kBlock / sz;
    const uint64_t paramChunk = std::min<uint64_t>(kParamChunk, AlignUp(c, 8));
    const uint64_t perElem = PackedPerElemBytes(op, sz);
    uint64_t bestG = 0, bestRows = 0, bestCost = ~0ull;
    for (uint64_t g = std::min<uint64_t>(CeilDiv(c, cores), BN_MAX_BLOCK_COUNT / PackedRowSets(op)); g >= 1; g /= 2) {
        const uint64_t stride = AlignUp(g * l, epb);
        const uint64_t fixed = PackedFixedBytes(op, g, l, stride, ReduceWorkElems(l));
        if (ubBytes <= fixed || (ubBytes - fixed) / (perElem * stride) < 1) continue;
        // The busiest core's channels within a quarter of the mean (C = 64 on
        // 48 cores is better served by the row plan, which can cut channels).
        const uint64_t coreUnits = CeilDiv(CeilDiv(c, g), cores);
        if (coreUnits * g * cores * 4 > 5 * c) continue;
        uint64_t rows = std::min<uint64_t>({(ubBytes - fixed) / (perElem * stride), n, BN_MAX_BLOCK_COUNT});
        rows = std::min(rows, std::max(CeilDiv(n * coreUnits, kTilesPerCore), CeilDiv(kMinTileBytes, g * l * sz)));
        if ((c * l - g * l) * sz > kMaxCopyStrideBytes) rows = 1;
        rows = Balanced(n, rows);
        const uint64_t rowBytes = g * l * sz;
        // a unit's own copies: its tiles, and about four small ones (workspace round trips, per-channel vectors)
        const uint64_t cost = coreUnits * ((CeilDiv(n, rows) + 4) * kCopyCostBytes + n * CeilDiv(rowBytes, 512) * 512);
        if (cost < bestCost) bestG = g, bestRows = rows, bestCost = cost;
    }
    if (bestG == 0) return false;
    const uint64_t g = bestG, stride = AlignUp(g * l, epb);
    BnRowTiling t{};
    t.n = n;
    t.c = c;
    t.l = l;
    t.packGroup = static_cast<uint32_t>(g);
    t.tileRows = bestRows;
    t.tileLen = g * l;
    t.tileStride = stride;
    t.tileElems = t.tileRows * stride;
    t.lChunks = 1;
    t.tilesPerChannel = CeilDiv(n, t.tileRows);
    const uint64_t groups = CeilDiv(c, g);
    t.totalItems = groups * t.tilesPerChannel;
    t.dtype = dtype;
    t.splits = 1;
    t.blockDim = static_cast<uint32_t>(std::min<uint64_t>(cores, groups));
    t.itemsBase = groups / t.blockDim;
    t.itemsRem = groups % t.blockDim;
    t.paramChunk = static_cast<uint32_t>(paramChunk);
    t.reduceWorkElems = static_cast<uint32_t>(ReduceWorkElems(l));
    *out = t;
    return true;
}

int RowTiling(BnOp op, uint64_t n, uint64_t c, uint64_t l, uint32_t dtype, uint32_t cores, uint32_t ubBytes,
              bool mayCut, BnRowTiling* out) {
    if (cores < 1 || cores > BN_MAX_CORES) return BN_TILING_BAD_CORES;
    const uint64_t sz = BnDtypeSize(dtype);
    if (sz == 0) return BN_TILING_BAD_DTYPE;
    if (n == 0 || c == 0 || l == 0) return BN_TILING_EMPTY;
    ubBytes = PlanUb(op, ubBytes);

    if (Packs(op, c, l, sz, cores) && PackedTiling(op, n, c, l, dtype, cores, ubBytes, out)) return BN_TILING_OK;

    const uint64_t epb = kBlock / sz;  // elements of T per 32-byte block
    const uint64_t paramChunk = std::min<uint64_t>(kParamChunk, AlignUp(c, 8));
    const uint64_t perElem = PerElemBytes(op, sz, l) + (Gated(op) ? kGateSlackPerElem : 0);
    // Largest tile that fits: solve for elems with the reduce work sized for the bound.
    const uint64_t bound = std::max<uint64_t>(ubBytes / perElem, paramChunk);
    const uint64_t fixed = FixedBytes(op, paramChunk, ReduceWorkElems(bound)) + (Gated(op) ? kGateSlackFixed : 0);
    if (ubBytes <= fixed) return BN_TILING_UB_TOO_SMALL;
    // The accumulator rows: one whole row each (a tile of whole rows), or as
    // long as the tile (a row cut into chunks: one row a tile).
    const uint64_t rowStride = AlignUp(l, epb);
    const uint64_t accRowBytes = FloatRows(op, sz, l) * rowStride * 4;
    const uint64_t maxRowsElems = ubBytes > fixed + accRowBytes ? (ubBytes - fixed - accRowBytes) / perElem : 0;
    const uint64_t maxElems = (ubBytes - fixed) / (perElem + FloatRows(op, sz, l) * 4) / epb * epb;
    if (maxElems < epb) return BN_TILING_UB_TOO_SMALL;

    // Tiles per channel wanted so that the cores share about kTilesPerCore
    // tiles each (whole tiles balance to within 1 / kTilesPerCore), but no
    // tile is cut below kMinTileBytes for it (short copies cost their latency).
    const uint64_t minTileElems = std::max<uint64_t>(epb, kMinTileBytes / sz);
    const bool reduces = ReducesPerChannel(op);
    const uint64_t wanted = reduces && !mayCut ? 1  // whole channels a core: the largest tile is best
        : std::min<uint64_t>(CeilDiv(kTilesPerCore * cores, c), std::max<uint64_t>(1, n * l / minTileElems));
    uint64_t tileRows, tileLen;
    // Whole rows per tile, unless there are fewer rows than wanted tiles and a row can be cut.
    if (rowStride <= maxRowsElems && (n >= wanted || l < 2 * minTileElems)) {
        tileLen = l;
        tileRows = std::min<uint64_t>({n, maxRowsElems / rowStride, BN_MAX_BLOCK_COUNT});
        // at least `wanted` row blocks when N allows: floor, so that rounding never leaves a core idle
        tileRows = std::max<uint64_t>(1, std::min<uint64_t>(tileRows, n / std::min<uint64_t>(n, wanted)));
        // A multi-row copy strides C*L elements between rows, and DataCopyPad's
        // stride is a uint32 of bytes: past that, one row a copy.
        if ((c * l - 1) * sz > kMaxCopyStrideBytes) tileRows = 1;
        tileRows = Balanced(n, tileRows);
    } else {  // one row spans several tiles
        tileRows = 1;
        uint64_t chunks = CeilDiv(l, maxElems);
        if (n * chunks < wanted) chunks = CeilDiv(wanted, n);
        tileLen = std::min<uint64_t>(maxElems, AlignUp(CeilDiv(l, chunks), epb));
    }

    BnRowTiling t{};
    t.n = n;
    t.c = c;
    t.l = l;
    t.tileRows = tileRows;
    t.tileLen = tileLen;
    t.tileStride = AlignUp(tileLen, epb);
    t.tileElems = t.tileRows * t.tileStride;
    t.lChunks = CeilDiv(l, tileLen);
    t.tilesPerChannel = CeilDiv(n, tileRows) * t.lChunks;
    t.totalItems = c * t.tilesPerChannel;
    t.dtype = dtype;
    t.splits = !reduces ? 0 : mayCut ? static_cast<uint32_t>(ChooseSplits(c, t.tilesPerChannel, t.tileRows * tileLen * sz, cores)) : 1;
    t.unitItems = reduces ? 0 : 1;
    const uint64_t units = reduces ? t.splits * c : t.totalItems;
    t.blockDim = static_cast<uint32_t>(std::min<uint64_t>(cores, units));
    t.itemsBase = units / t.blockDim;
    t.itemsRem = units % t.blockDim;
    t.paramChunk = static_cast<uint32_t>(paramChunk);
    t.reduceWorkElems = static_cast<uint32_t>(ReduceWorkElems(std::max<uint64_t>(t.tileElems, paramChunk)));
    *out = t;
    return BN_TILING_OK;
}

}  // namespace

int BnRowTilingFor(BnOp op, uint64_t n, uint64_t c, uint64_t l, uint32_t dtype, uint32_t cores,
                   uint32_t ubBytes, BnRowTiling* out) {
    return RowTiling(op, n, c, l, dtype, cores, ubBytes, false, out);
}

int BnRowCutTilingFor(BnOp op, uint64_t n, uint64_t c, uint64_t l, uint32_t dtype, uint32_t cores,
                      uint32_t ubBytes, BnRowTiling* out) {
    return RowTiling(op, n, c, l, dtype, cores, ubBytes, true, out);
}

uint64_t BnUbBytes(BnOp op, const BnRowTiling& t) {
    const uint64_t sz = BnDtypeSize(t.dtype);
    if (t.packGroup) {
        return PackedPerElemBytes(op, sz) * t.tileElems + PackedFixedBytes(op, t.packGroup, t.l, t.tileStride, t.reduceWorkElems);
    }
    return PerElemBytes(op, sz, t.l) * t.tileElems + FloatRows(op, sz, t.l) * t.tileStride * 4 +
           FixedBytes(op, t.paramChunk, t.reduceWorkElems) + GateExtraBytes(op, t.tileElems);
}

uint64_t BnPackedWorkspaceStride(BnOp op, const BnRowTiling& t) {
    return AlignUp(PackedRowSets(op) * t.packGroup * t.l * 4, 512);
}

uint64_t BnWorkspaceBytes(BnOp op, const BnRowTiling& t) {
    // Partials of cut channels are outputs of their own (see ReducesPerChannel);
    // the packed kernels realign their per-lane results through GM.
    return t.packGroup ? t.blockDim * BnPackedWorkspaceStride(op, t) : 0;
}

uint64_t BnRowPartElems(const BnRowTiling& t, uint64_t part) {
    uint64_t elems = 0;
    const uint64_t end = (part + 1) * t.tilesPerChannel / t.splits;
    for (uint64_t r = part * t.tilesPerChannel / t.splits; r < end; ++r) {
        const uint64_t row0 = (r / t.lChunks) * t.tileRows, col0 = (r % t.lChunks) * t.tileLen;
        elems += std::min<uint64_t>(t.tileRows, t.n - row0) * std::min<uint64_t>(t.tileLen, t.l - col0);
    }
    return elems;
}

// ---------------------------------------------------------------- C-last path
namespace {

constexpr uint64_t kClastMinRows = 8;     // rows a tile should hold before channels are cut into chunks
constexpr uint32_t kClastCountChunk = 256;  // per-rank counts per UB batch (backward_elemt)
constexpr uint64_t kMergeMinChannels = 128; // channels per core of a merge launch: 512-byte float bursts
constexpr uint64_t kClastPackedRowBytes = 512;  // ragged rows shorter than this pack (BnClastTiling::rowGroup)

// Bytes per tile element: the queues of T (double-buffered) plus float tiles.
uint64_t ClastPerElemBytes(BnOp op, uint64_t sz) {
    switch (op) {
        case BN_OP_STATS: return 2 * sz + 4 * 4;            // x queue; xf, shift K (broadcast), acc(x-K), acc((x-K)^2)
        case BN_OP_ELEMT: return 4 * sz + 4 * 4;            // x, y queues; xf, mean, scale, bias (broadcast)
        case BN_OP_BACKWARD_REDUCE: return 4 * sz + 3 * 4;  // dy, x queues; dyf, xf, mean (broadcast)
        case BN_OP_BACKWARD_ELEMT: return 6 * sz + 6 * 4;   // dy, x, dx queues; dyf, xf, mean, a, b, k (broadcast)
        case BN_OP_ELEMT_ACT: return 6 * sz + 6 * 4;        // x, residual, y queues; xf, mean, scale, bias, rf, zeros
        case BN_OP_BACKWARD_REDUCE_RELU:                    // dy, y, x queues, grad_sum queue; dyf, xf, yf,
            return 8 * sz + 5 * 4;                          // mean (broadcast), zeros
    }
    return 0;
}

// Per-channel float vectors of one chunk (chunkStride floats each).
uint64_t ClastVectors(BnOp op) {
    switch (op) {
        case BN_OP_STATS: return 4;            // mean, tmp, var, ones
        case BN_OP_ELEMT: return 4;            // mean, invstd, scale, bias
        case BN_OP_BACKWARD_REDUCE: return 3;  // mean, acc(dy), acc(dy*xmu) (each tile folded into one stride)
        case BN_OP_BACKWARD_ELEMT: return 5;   // mean, invstd, k, a, b
        case BN_OP_ELEMT_ACT: return 4;        // as elemt
        case BN_OP_BACKWARD_REDUCE_RELU: return 3;  // as backward_reduce
    }
    return 0;
}

uint64_t ClastFixedBytes(BnOp op, uint64_t stride, uint64_t countChunk) {
    return ClastVectors(op) * AlignUp(stride * 4, kBlock) + AlignUp(countChunk * 4, kBlock);
}

}  // namespace

int BnClastTilingFor(BnOp op, uint64_t rows, uint64_t c, uint32_t dtype, uint32_t cores, uint32_t ubBytes,
                     BnClastTiling* out) {
    if (cores < 1 || cores > BN_MAX_CORES) return BN_TILING_BAD_CORES;
    const uint64_t sz = BnDtypeSize(dtype);
    if (sz == 0) return BN_TILING_BAD_DTYPE;
    if (rows == 0 || c == 0) return BN_TILING_EMPTY;
    ubBytes = PlanUb(op, ubBytes);

    BnClastTiling t{};
    t.rows = rows;
    t.c = c;
    t.dtype = dtype;
    t.blockDim = static_cast<uint32_t>(std::min<uint64_t>(cores, rows));
    t.rowsBase = rows / t.blockDim;
    t.rowsRem = rows % t.blockDim;
    t.countChunk = op == BN_OP_BACKWARD_ELEMT ? kClastCountChunk : 0;
    const uint64_t coreRows = t.rowsBase + (t.rowsRem ? 1 : 0);
    const uint64_t wantRows = std::min<uint64_t>(kClastMinRows, coreRows);
    const uint64_t epb = kBlock / sz;
    const uint64_t perElem = ClastPerElemBytes(op, sz) + (Gated(op) ? kGateSlackPerElem : 0);

    // A short ragged row packs: rowGroup rows fill whole 32-byte blocks, and a
    // tile is one burst (one DataCopyPad block) however short a row is. The
    // per-channel vectors then span rowGroup rows too; when they and one row
    // group do not fit (odd C near 256 in 16-bit types), the plan falls back
    // to one padded row per UB stride (one burst per row, but a plan).
    const bool ragged = c % epb != 0 && c * sz < kClastPackedRowBytes;
    uint64_t fitRows = 0;
    bool found = false;
    for (int attempt = ragged ? 0 : 1; attempt < 2 && !found; ++attempt) {
        const bool packed = attempt == 0;
        t.rowGroup = packed ? static_cast<uint32_t>(epb / std::gcd<uint64_t>(c, epb)) : 1;
        // Fewest chunks whose tile holds wantRows rows: the longest bursts. Chunks
        // are balanced (and 32-byte multiples but the last) so that no chunk is a
        // short remainder: every burst stays near c / chunks elements.
        uint64_t chunks = packed ? 1 : std::max<uint64_t>(1, CeilDiv(c * perElem * wantRows, ubBytes));
        for (;; ++chunks) {
            const uint64_t cc = std::min<uint64_t>(c, AlignUp(CeilDiv(c, chunks), epb));
            const uint64_t stride = packed ? t.rowGroup * c : AlignUp(cc, epb);
            const uint64_t fixed = ClastFixedBytes(op, stride, t.countChunk) + (Gated(op) ? kGateSlackFixed : 0);
            fitRows = ubBytes > fixed ? (ubBytes - fixed) / (perElem * stride) * t.rowGroup : 0;
            if (fitRows >= wantRows) {
                t.chanChunk = cc;
                t.chunkStride = stride;
                found = true;
                break;
            }
            if (cc <= epb || packed) break;
        }
    }
    if (!found) return BN_TILING_UB_TOO_SMALL;
    const bool packed = t.rowGroup > 1;
    t.chunks = CeilDiv(c, t.chanChunk);
    // rows of a packed tile are one block (no blockCount limit), else one block each
    t.tileRows = Balanced(coreRows, std::min<uint64_t>({fitRows, coreRows, packed ? fitRows : BN_MAX_BLOCK_COUNT}));
    t.tileElems = CeilDiv(t.tileRows, t.rowGroup) * t.chunkStride;
    *out = t;
    return BN_TILING_OK;
}

uint64_t BnClastUbBytes(BnOp op, const BnClastTiling& t) {
    return ClastPerElemBytes(op, BnDtypeSize(t.dtype)) * t.tileElems + ClastFixedBytes(op, t.chunkStride, t.countChunk) +
           GateExtraBytes(op, t.tileElems);
}

uint64_t BnClastCoreRows(const BnClastTiling& t, uint32_t k) { return t.rowsBase + (k < t.rowsRem ? 1 : 0); }

uint32_t BnMergeCores(uint64_t c, uint32_t cores) {
    return static_cast<uint32_t>(std::max<uint64_t>(1, std::min<uint64_t>(cores, c / kMergeMinChannels)));
}

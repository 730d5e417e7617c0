/*
 * Tiling structs of the five batch-norm kernels: plain POD, filled on the host
 * (op_kernels/host/batch_norm_tiling.cpp) and read by the kernels through their
 * `tiling` GM argument. Shared unchanged by the NPU build and the CPU twin, so
 * every field has a fixed width and the layout has no implicit padding.
 *
 * Geometry ("row tiling"): the input is viewed as (N, C, L) contiguous, L being
 * the product of the dims after C. A channel's data is N rows of L contiguous
 * elements, rows C*L elements apart. One *tile* is a block of `rows` rows x `len`
 * elements of one channel; it is copied to UB with one DataCopy/DataCopyPad,
 * each row landing 32-byte aligned (UB row stride = tileStride elements).
 * Either a tile spans whole rows (len == L, rows <= tileRows) or, when one row
 * is longer than a tile, a chunk of one row (rows == 1, len <= tileLen).
 * Work items are (channel, tile) pairs numbered channel-major
 * (item = c * tilesPerChannel + t). The elementwise kernels group them in units
 * of unitItems (1) items; core k takes one contiguous range of units, so a core
 * may take part of a channel. The reducing kernels (stats, backward_reduce)
 * cut each channel's tiles into `splits` parts of consecutive tiles (part p:
 * tiles [p * tilesPerChannel / splits, (p + 1) * tilesPerChannel / splits));
 * their unit is one (part, channel) pair, numbered part-major (u = p * c +
 * channel), and core k takes a contiguous range of units. Unit u writes entry u
 * of the kernel's (splits, C) outputs: with one part these are the results; with
 * several they are partials that the host merges with a second launch on the
 * same stream (stream order is the barrier, no kernel waits for another core;
 * see host/tiling.cpp, ChooseSplits).
 *
 * Packed layout (packGroup > 0; stats on short rows): a sample's rows of G =
 * packGroup consecutive channels are G*L contiguous elements, so a *group* of
 * G channels (the last may hold fewer) takes the place of a channel above: a
 * tile is `rows` samples x the group's G*L elements (tileLen = G*L), one burst
 * per sample instead of one per (sample, channel), and a unit is one group
 * with all its samples (splits = 1). The kernel keeps per-lane sums and turns
 * them into per-channel results once per unit (kernels/batch_norm_stats_packed.h),
 * through `workspace` (BnWorkspaceBytes). Stats and backward_reduce pack.
 */
#ifndef NPU_SYNCBN_BATCH_NORM_TILING_H
#define NPU_SYNCBN_BATCH_NORM_TILING_H

#include <stdint.h>

enum BnDtype : uint32_t { BN_FLOAT32 = 0, BN_FLOAT16 = 1, BN_BFLOAT16 = 2 };

// Bits of BnBackwardReduceTiling::outputMask (aten's input_g / weight_g / bias_g).
enum BnReduceOutputs : uint32_t { BN_OUT_SUMS = 1u, BN_OUT_GRAD_WEIGHT = 2u, BN_OUT_GRAD_BIAS = 4u };

struct BnRowTiling {
    uint64_t n;                // batch
    uint64_t c;                // channels
    uint64_t l;                // inner size (product of dims after C; 1 for 2D input)
    uint64_t tileRows;         // rows per tile (> 1 only when a tile holds whole rows)
    uint64_t tileLen;          // elements per row in a tile (== l when whole rows fit)
    uint64_t tileStride;       // UB row stride in elements: tileLen rounded up to 32 bytes
    uint64_t tileElems;        // UB elements of one tile buffer: tileRows * tileStride
    uint64_t lChunks;          // ceil(l / tileLen)
    uint64_t tilesPerChannel;  // ceil(n / tileRows) * lChunks
    uint64_t totalItems;       // c * tilesPerChannel
    uint64_t unitItems;        // items per unit of the elementwise kernels (1); 0 for the reducing kernels
    uint64_t itemsBase;        // every core gets itemsBase units ...
    uint64_t itemsRem;         // ... and the first itemsRem cores one more
    uint32_t dtype;            // BnDtype of the big tensors
    uint32_t blockDim;         // cores to launch (<= requested core count)
    uint32_t paramChunk;       // channels per batch of per-channel params / results in UB
    uint32_t reduceWorkElems;  // float elements of the ReduceSum work buffer
    uint32_t splits;           // parts per channel of the reducing kernels (>= 1); 0 for the elementwise ones
    uint32_t packGroup;        // > 0: the packed layout below, packGroup channels a group; 0: not packed
};

// The packed kernels' per-channel rows re-read from the workspace (kernels/
// bn_packed.h): stats K, d and M2 lanes, backward_reduce its two sums; and
// their per-channel result slots of 8 floats (4 slot regions).
enum BnPackedSizes : uint32_t {
    BN_PACKED_STATS_ROWS = 3,
    BN_PACKED_REDUCE_ROWS = 2,
    BN_PACKED_SLOTS = 4,
    BN_PACKED_SLOT_FLOATS = 8,
};

// Rows (of the row tiling) this long or longer are widened to float a row at a
// time by backward_reduce, which then plans float rows instead of float tiles.
enum BnRowWidening : uint32_t { BN_WIDE_ROW_BYTES = 1024 };

struct BnStatsTiling {
    BnRowTiling rows;
    float eps;
    uint32_t reserved;
};

// The fused epilogue of batch_norm_elemt_act (all 0 for batch_norm_elemt):
// y = bn(x), then y + residual rounded to T when hasResidual, then ReLU when
// relu. gateElems: elements of the buffer ReLU's Compares reads (tileElems
// rounded up to whole 256-byte float repeats), 0 without relu.
struct BnActFields {
    uint32_t hasResidual;
    uint32_t relu;
    uint32_t gateElems;
    uint32_t reserved;
};

struct BnElemtTiling {
    BnRowTiling rows;
    uint32_t hasWeight;
    uint32_t hasBias;
    BnActFields act;
};

struct BnBackwardReduceTiling {
    BnRowTiling rows;
    uint32_t hasWeight;   // grad_weight needs only invstd; kept for symmetry with aten
    uint32_t outputMask;  // BnReduceOutputs
    BnActFields act;      // batch_norm_backward_reduce_relu: relu and gateElems (0 otherwise)
};

struct BnBackwardElemtTiling {
    BnRowTiling rows;
    uint32_t hasWeight;
    uint32_t world;       // length of the count tensor (ranks)
};

// gather_stats works on (W, C) statistics: channels are split over cores in
// contiguous ranges, each processed `chunk` channels at a time.
struct BnGatherTiling {
    uint64_t c;
    uint64_t world;
    uint64_t chanBase;    // channels per core ...
    uint64_t chanRem;     // ... plus one for the first chanRem cores
    uint32_t blockDim;
    uint32_t chunk;       // channels per UB batch
    uint32_t countChunk;  // counts per UB batch
    uint32_t hasRunningMean;
    uint32_t hasRunningVar;
    float momentum;
    float eps;
    uint32_t reserved;
};

/*
 * C-last geometry ("channel-inner tiling"), a tiling path of its own for input
 * whose channels are innermost in memory: channels_last (NHWC), channels_last_3d
 * (NDHWC) and 2-D (N, C). The input is viewed as (R, C) row-major, R = N *
 * spatial. Channels are cut into `chunks` chunks of chanChunk channels (the
 * last may be shorter); one *tile* is tileRows consecutive rows of one chunk,
 * copied with one DataCopyPad whose bursts are chanChunk elements each (the
 * whole row when one chunk holds every channel), each row landing at a
 * 32-byte aligned UB stride of chunkStride elements. A short ragged row (all
 * channels in one chunk, C not a multiple of 32 bytes, under 512 bytes) would
 * make short bursts, so then the tile moves as ONE burst of tileRows * C
 * elements, packed in UB: a UB stride holds rowGroup rows (the fewest whose
 * elements fill whole 32-byte blocks, chunkStride = rowGroup * C), lane i
 * holding channel i % C. Vector lanes run across channels, the reduction runs
 * over rows. Rows are split over cores in
 * contiguous ranges (rowsBase each, one more for the first rowsRem cores) and
 * every core walks all chunks of its rows, chunk-major. The reducing kernels
 * therefore produce one partial row (C,) per core, merged by a second launch
 * on the same stream (see host/tiling.h, BnClastTilingFor): no barrier.
 */
struct BnClastTiling {
    uint64_t rows;         // R: product of all dims but C
    uint64_t c;            // channels (innermost, contiguous)
    uint64_t chanChunk;    // channels per chunk
    uint64_t chunkStride;  // UB stride in elements: chanChunk rounded up to 32 bytes of T, or rowGroup * c
    uint64_t chunks;       // ceil(c / chanChunk)
    uint64_t tileRows;     // rows per tile (<= BN_MAX_BLOCK_COUNT unless packed)
    uint64_t tileElems;    // UB elements of one tile buffer: ceil(tileRows / rowGroup) * chunkStride
    uint64_t rowsBase;     // rows per core ...
    uint64_t rowsRem;      // ... plus one for the first rowsRem cores
    uint32_t dtype;        // BnDtype of the big tensors
    uint32_t blockDim;     // cores to launch
    uint32_t countChunk;   // floats of the per-rank count batch (backward_elemt), else 0
    uint32_t rowGroup;     // rows per UB stride: 1, or > 1 for packed tiles (then chunks == 1)
};

struct BnClastStatsTiling {
    BnClastTiling g;
    float eps;
    uint32_t reserved;
};

struct BnClastElemtTiling {
    BnClastTiling g;
    uint32_t hasWeight;
    uint32_t hasBias;
    BnActFields act;
};

struct BnClastBackwardReduceTiling {
    BnClastTiling g;
    uint32_t hasWeight;
    uint32_t outputMask;  // BnReduceOutputs (of the merge launch; the partials are always written)
    BnActFields act;      // batch_norm_backward_reduce_relu_clast: relu and gateElems
};

struct BnClastBackwardElemtTiling {
    BnClastTiling g;
    uint32_t hasWeight;
    uint32_t world;       // length of the count tensor (ranks)
};

// The merge launch of backward_reduce's partial sums (C-last: one row per
// core; row layout: one per part of a channel): sums `rows` partial rows
// (rows, C) of sum_dy and sum_dy_xmu over the rows, channels split over cores
// in contiguous ranges, `chunk` channels at a time, `rowBatch` rows of a chunk
// moved by one strided copy; writes the outputs of mask.
struct BnSumRowsTiling {
    uint64_t c;
    uint64_t rows;
    uint64_t chanBase;    // channels per core ...
    uint64_t chanRem;     // ... plus one for the first chanRem cores
    uint32_t blockDim;
    uint32_t chunk;       // channels per UB batch
    uint32_t outputMask;  // BnReduceOutputs
    uint32_t rowBatch;    // rows per copy (<= rows, <= BN_MAX_BLOCK_COUNT)
};

#endif  // NPU_SYNCBN_BATCH_NORM_TILING_H

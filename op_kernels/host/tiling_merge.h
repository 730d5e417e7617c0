/*
 * Tilings of the two merge launches (included by tiling.h): the gather kernel
 * over (W, C) statistics (ranks, or a reduction's per-core / per-part
 * partials) and batch_norm_sum_rows over (rows, C) partial sums. Small enough
 * to live inline here, beside the declarations they implement.
 */
#ifndef NPU_SYNCBN_HOST_TILING_MERGE_H
#define NPU_SYNCBN_HOST_TILING_MERGE_H

#include <algorithm>

namespace bn_merge {
constexpr uint64_t kBlock = 32;
constexpr uint32_t kGatherChunk = 1024;
constexpr uint32_t kCountChunk = 1024;
constexpr uint32_t kSumRowsChunk = 1024;
constexpr uint32_t kSumRowsMinChunk = 128;  // 512-byte bursts per row
inline uint64_t AlignUp(uint64_t a, uint64_t b) { return (a + b - 1) / b * b; }
}  // namespace bn_merge

inline int BnGatherTilingFor(uint64_t c, uint64_t world, uint32_t cores, uint32_t ubBytes, bool hasRunningMean,
                      bool hasRunningVar, float momentum, float eps, BnGatherTiling* out) {
    if (cores < 1 || cores > BN_MAX_CORES) return BN_TILING_BAD_CORES;
    if (c == 0) return BN_TILING_EMPTY;
    if (world == 0) return BN_TILING_BAD_WORLD;
    BnGatherTiling t{};
    t.c = c;
    t.world = world;
    t.blockDim = static_cast<uint32_t>(std::min<uint64_t>(cores, c));
    t.chanBase = c / t.blockDim;
    t.chanRem = c % t.blockDim;
    t.chunk = static_cast<uint32_t>(std::min<uint64_t>(bn_merge::kGatherChunk, bn_merge::AlignUp(t.chanBase + (t.chanRem ? 1 : 0), 8)));
    t.countChunk = static_cast<uint32_t>(std::min<uint64_t>(bn_merge::kCountChunk, bn_merge::AlignUp(world, 8)));
    t.hasRunningMean = hasRunningMean ? 1 : 0;
    t.hasRunningVar = hasRunningVar ? 1 : 0;
    t.momentum = momentum;
    t.eps = eps;
    while (BnGatherUbBytes(t) > ubBytes && t.chunk > 8) t.chunk /= 2;
    if (BnGatherUbBytes(t) > ubBytes) return BN_TILING_UB_TOO_SMALL;
    *out = t;
    return BN_TILING_OK;
}

inline uint64_t BnGatherUbBytes(const BnGatherTiling& t) {
    // mean acc, M2 acc, rank mean, rank invstd, tmp, running mean, running var; counts
    return 7 * bn_merge::AlignUp(uint64_t(t.chunk) * 4, bn_merge::kBlock) + bn_merge::AlignUp(uint64_t(t.countChunk) * 4, bn_merge::kBlock);
}

inline int BnSumRowsTilingFor(uint64_t c, uint64_t rows, uint32_t cores, uint32_t ubBytes, uint32_t outputMask,
                       BnSumRowsTiling* out) {
    if (cores < 1 || cores > BN_MAX_CORES) return BN_TILING_BAD_CORES;
    if (c == 0) return BN_TILING_EMPTY;
    if (rows == 0) return BN_TILING_BAD_WORLD;
    BnSumRowsTiling t{};
    t.c = c;
    t.rows = rows;
    t.blockDim = BnMergeCores(c, cores);
    t.chanBase = c / t.blockDim;
    t.chanRem = c % t.blockDim;
    t.chunk = static_cast<uint32_t>(std::min<uint64_t>(bn_merge::kSumRowsChunk, bn_merge::AlignUp(t.chanBase + (t.chanRem ? 1 : 0), 8)));
    t.outputMask = outputMask;
    // Every row of a chunk in one copy when it fits with at least kSumRowsMinChunk
    // channels; else fewer rows a copy.
    t.rowBatch = static_cast<uint32_t>(std::min<uint64_t>(rows, BN_MAX_BLOCK_COUNT));
    while (BnSumRowsUbBytes(t) > ubBytes && t.chunk > bn_merge::kSumRowsMinChunk) t.chunk /= 2;
    while (BnSumRowsUbBytes(t) > ubBytes && t.rowBatch > 1) t.rowBatch = (t.rowBatch + 1) / 2;
    while (BnSumRowsUbBytes(t) > ubBytes && t.chunk > 8) t.chunk /= 2;
    if (BnSumRowsUbBytes(t) > ubBytes) return BN_TILING_UB_TOO_SMALL;
    *out = t;
    return BN_TILING_OK;
}

inline uint64_t BnSumRowsUbBytes(const BnSumRowsTiling& t) {
    // rowBatch rows of sum_dy and of sum_dy_xmu; acc sum_dy, acc sum_dy_xmu, invstd
    const uint64_t chunk = bn_merge::AlignUp(uint64_t(t.chunk) * 4, bn_merge::kBlock);
    return 2 * uint64_t(t.rowBatch) * chunk + 3 * chunk;
}

#endif  // NPU_SYNCBN_HOST_TILING_MERGE_H

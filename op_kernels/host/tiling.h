/*
 * Host tiling of the batch-norm kernels: pure C++ functions from (shape, dtype,
 * core count, UB size) to the POD structs of include/batch_norm_tiling.h.
 * Shared by the NPU launch glue (npu_ops.cpp) and the CPU twin (twin/capi.cpp).
 *
 * The UB plan of every kernel (which buffers, how many bytes per tile element,
 * how many fixed bytes) lives here, in BnUbBytes, and the kernels allocate
 * exactly that plan from the tiling fields; the twin checks the 192 KiB limit.
 */
#ifndef NPU_SYNCBN_HOST_TILING_H
#define NPU_SYNCBN_HOST_TILING_H

#include <cstdint>

#include "batch_norm_tiling.h"

enum BnOp : uint32_t {
    BN_OP_STATS = 0,
    BN_OP_ELEMT = 1,
    BN_OP_BACKWARD_REDUCE = 2,
    BN_OP_BACKWARD_ELEMT = 3,
    // The fused activation (relu(bn(x) + residual)): elemt with the residual
    // add and ReLU epilogue, and backward_reduce gated by ReLU's mask (which it
    // also writes as grad_sum). Their gate is Compares + Select (see BnGateElems).
    BN_OP_ELEMT_ACT = 4,
    BN_OP_BACKWARD_REDUCE_RELU = 5,
};

static const uint32_t BN_UB_BYTES = 192 * 1024;  // UB per vector core (Ascend 910B)
static const uint32_t BN_MAX_CORES = 48;         // vector cores of a 910B2
static const uint32_t BN_MAX_BLOCK_COUNT = 4095; // DataCopyPad blockCount limit
// UB a kernel that calls Select may plan: on dav-2201 Select's tensor modes
// stage a block at UB offset 184 KiB (asc-devkit TMP_UB_OFFSET).
static const uint32_t BN_SELECT_UB_BYTES = 184 * 1024;

enum BnTilingStatus : int {
    BN_TILING_OK = 0,
    BN_TILING_EMPTY = 1,      // a zero dim: nothing to launch
    BN_TILING_BAD_CORES = 2,  // core count outside 1..48
    BN_TILING_BAD_DTYPE = 3,
    BN_TILING_UB_TOO_SMALL = 4,
    BN_TILING_BAD_WORLD = 5,
};

const char* BnTilingStatusText(int status);

// gateElems of BnActFields for a tile of tileElems elements (whole 256-byte float repeats).
uint32_t BnGateElems(uint64_t tileElems);

// Bytes per element of T for a BnDtype (0 for an unknown dtype).
uint32_t BnDtypeSize(uint32_t dtype);

// Row tiling of one of the (N, C, L) kernels. The reducing kernels (stats,
// backward_reduce) get whole channels a core here, or on short rows whole
// groups of channels (the packed layout) (splits = 1: one launch, (C,)
// outputs), which leaves cores idle when C < cores or C does not spread
// evenly; BnRowCutTilingFor may cut channels into parts (splits >= 1), whose
// (splits, C) partial outputs the host merges with a second launch (bn_ops.h).
int BnRowTilingFor(BnOp op, uint64_t n, uint64_t c, uint64_t l, uint32_t dtype, uint32_t cores,
                   uint32_t ubBytes, BnRowTiling* out);
int BnRowCutTilingFor(BnOp op, uint64_t n, uint64_t c, uint64_t l, uint32_t dtype, uint32_t cores,
                      uint32_t ubBytes, BnRowTiling* out);

// UB bytes the kernel of `op` allocates for tiling `t` (its InitBuffer total).
uint64_t BnUbBytes(BnOp op, const BnRowTiling& t);

// Elements of x that part `part` of every channel holds (the reducing kernels'
// splits; the counts of the stats merge).
uint64_t BnRowPartElems(const BnRowTiling& t, uint64_t part);

// Workspace bytes the kernel of `op` needs: a packed kernel's per-core GM
// rows (BnPackedWorkspaceStride: row sets x packGroup x l floats a core,
// 512-byte aligned), 0 for every other kernel.
uint64_t BnWorkspaceBytes(BnOp op, const BnRowTiling& t);
uint64_t BnPackedWorkspaceStride(BnOp op, const BnRowTiling& t);

// Tiling of batch_norm_gather_stats_with_counts over (world, c) statistics.
int BnGatherTilingFor(uint64_t c, uint64_t world, uint32_t cores, uint32_t ubBytes, bool hasRunningMean,
                      bool hasRunningVar, float momentum, float eps, BnGatherTiling* out);

// UB bytes the gather kernel allocates for tiling `t`.
uint64_t BnGatherUbBytes(const BnGatherTiling& t);

// ---------------------------------------------------------------- C-last path
// Tiling of one of the four kernels on (R, C) input with C innermost
// (include/batch_norm_tiling.h, BnClastTiling). The reducing kernels (stats,
// backward_reduce) write one partial row per core; the host merges them with a
// second launch on the same stream, stream order being the barrier:
//   stats:           per-core (mean, invstd) rows and row counts -> the gather
//                    kernel (Chan's merge, the same one that merges ranks);
//   backward_reduce: per-core (sum_dy, sum_dy_xmu) rows -> batch_norm_sum_rows.
int BnClastTilingFor(BnOp op, uint64_t rows, uint64_t c, uint32_t dtype, uint32_t cores, uint32_t ubBytes,
                     BnClastTiling* out);

// UB bytes the C-last kernel of `op` allocates for tiling `t`.
uint64_t BnClastUbBytes(BnOp op, const BnClastTiling& t);

// Rows of core k: [begin, begin + count).
uint64_t BnClastCoreRows(const BnClastTiling& t, uint32_t k);

// Cores for a merge launch over c channels: as many as keep >= 128 channels
// (a 512-byte float32 burst) per core, at least one, at most `cores`.
uint32_t BnMergeCores(uint64_t c, uint32_t cores);

// Tiling of batch_norm_sum_rows over (rows, c) partial sums.
int BnSumRowsTilingFor(uint64_t c, uint64_t rows, uint32_t cores, uint32_t ubBytes, uint32_t outputMask,
                       BnSumRowsTiling* out);

// UB bytes batch_norm_sum_rows allocates for tiling `t`.
uint64_t BnSumRowsUbBytes(const BnSumRowsTiling& t);

#include "tiling_merge.h"  // the merge launches' tilings, inline

#endif  // NPU_SYNCBN_HOST_TILING_H

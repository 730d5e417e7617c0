/*
 * Plain C ABI of the twin library (loaded from Python with ctypes): one launcher
 * per kernel, doing what the NPU host glue does (tiling, workspace, launch on
 * block_dim cores), plus the tiling functions and the byte counts for tests.
 * The timing model's functions are in capi_timing.cpp.
 *
 * Return codes: 0 ok, 1 a kernel broke a rule (twin_last_error() names the
 * kernel, the core and the rule), 2 bad arguments (tiling refused them).
 */
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "kernel_entries.h"
#include "twin_pipes.h"
#include "twin_timing_sim.h"
#include "capi_report.h"
#include "../host/tiling.h"
#include "../kernels/bn_common.h"

extern "C" {
// Test-only kernels with planted rule breaks (tests/broken_kernels.cpp).
void twin_broken_ub_overflow(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_broken_misaligned_copy(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_broken_queue_leak(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_broken_deque_empty(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_broken_double_alloc(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_broken_skip_syncall(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_broken_gm_overrun(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_broken_syncall_not_mix(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_broken_ub_plan(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_broken_too_many_buffers(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_broken_copy_params(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_broken_repeat(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_broken_pipe_mte2_v(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_broken_pipe_v_mte3(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_broken_pipe_scalar_after_deque(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_ok_pipe_events(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_broken_vector_raw(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_ok_vector_raw(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_ok_copy(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_broken_compares_count(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_broken_select_scratch(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_ok_relu_gate(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_ok_syncall_mix(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_ok_soft_syncall(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
}

namespace {

std::string gError;
uint32_t gBlockDim = 0;
std::vector<twin::Traffic> gTraffic;  // GM traffic of the last op: its launches, same-named buffers summed
std::vector<twin::LaunchTime> gTimes;  // the timing model's time of each launch of the last op (timing on)

int Report(const std::string& err) {
    gError = err;
    gTraffic = twin::LastTraffic();
    gTimes.clear();
    if (err.empty() && twin::CurrentTimingMode() != twin::kTimingOff) gTimes.push_back(twin::LastLaunchTime());
    return err.empty() ? 0 : 1;
}

// The merge launch of a two-launch op (C-last stats / backward_reduce): its
// traffic adds to the first launch's. Called only after the first succeeded.
int ReportMerge(const std::string& err) {
    std::vector<twin::Traffic> first = gTraffic;
    std::vector<twin::LaunchTime> times = gTimes;
    Report(err);
    times.insert(times.end(), gTimes.begin(), gTimes.end());
    gTimes = times;
    for (const twin::Traffic& m : gTraffic) {
        bool found = false;
        for (twin::Traffic& f : first) {
            if (f.name != m.name) continue;
            f.read += m.read;
            f.written += m.written;
            for (const auto& kv : m.bursts) f.bursts[kv.first] += kv.second;
            found = true;
        }
        if (!found) first.push_back(m);
    }
    gTraffic = first;
    return err.empty() ? 0 : 1;
}

int Refuse(const std::string& kernel, int status) {
    gError = "kernel '" + kernel + "': " + BnTilingStatusText(status);
    return 2;
}

uint8_t* Gm(const void* p) { return static_cast<uint8_t*>(const_cast<void*>(p)); }

// The merge launch of stats' (w, c) partial (mean, invstd) rows of counts[k]
// elements each (the row path's parts, the C-last path's cores): the gather kernel.
int MergeStats(std::vector<float>& pm, std::vector<float>& ps, std::vector<float>& counts, uint64_t c, float eps,
               uint32_t cores, float* mean, float* invstd) {
    const uint64_t w = counts.size();
    BnGatherTiling g{};
    const int st = BnGatherTilingFor(c, w, BnMergeCores(c, cores), BN_UB_BYTES, false, false, 0.0f, eps, &g);
    if (st != BN_TILING_OK) return Refuse("batch_norm_gather_stats_with_counts", st);
    return ReportMerge(twin::Launch(
        "batch_norm_gather_stats_with_counts", g.blockDim,
        {{"workspace.mean", pm.data(), w * c * 4}, {"workspace.invstd", ps.data(), w * c * 4},
         {"workspace.counts", counts.data(), w * 4}, {"mean", mean, c * 4}, {"invstd", invstd, c * 4},
         {"tiling", &g, sizeof(g)}},
        [&] {
            batch_norm_gather_stats_with_counts(Gm(pm.data()), Gm(ps.data()), nullptr, nullptr, Gm(counts.data()),
                                                Gm(mean), Gm(invstd), nullptr, Gm(&g));
        },
        BnGatherUbBytes(g)));
}

// The merge launch of backward_reduce's (w, c) partial sums: batch_norm_sum_rows.
int MergeSums(std::vector<float>& pdy, std::vector<float>& pxmu, uint64_t w, uint64_t c, const float* invstd,
              uint32_t outputMask, uint32_t cores, float* sumDy, float* sumDyXmu, float* gradWeight, float* gradBias) {
    BnSumRowsTiling m{};
    const int st = BnSumRowsTilingFor(c, w, cores, BN_UB_BYTES, outputMask, &m);
    if (st != BN_TILING_OK) return Refuse("batch_norm_sum_rows", st);
    const bool sums = outputMask & BN_OUT_SUMS;
    return ReportMerge(twin::Launch(
        "batch_norm_sum_rows", m.blockDim,
        {{"workspace.sum_dy", pdy.data(), w * c * 4}, {"workspace.sum_dy_xmu", pxmu.data(), w * c * 4},
         {"invstd", Gm(invstd), c * 4}, {"sum_dy", sumDy, sums ? c * 4 : 0}, {"sum_dy_xmu", sumDyXmu, sums ? c * 4 : 0},
         {"grad_weight", gradWeight, (outputMask & BN_OUT_GRAD_WEIGHT) ? c * 4 : 0},
         {"grad_bias", gradBias, (outputMask & BN_OUT_GRAD_BIAS) ? c * 4 : 0}, {"tiling", &m, sizeof(m)}},
        [&] {
            batch_norm_sum_rows(Gm(pdy.data()), Gm(pxmu.data()), Gm(invstd), Gm(sumDy), Gm(sumDyXmu), Gm(gradWeight),
                                Gm(gradBias), nullptr, Gm(&m));
        },
        BnSumRowsUbBytes(m)));
}

}  // namespace

namespace twin_capi {
int Report(const std::string& err) { return ::Report(err); }
void SetBlockDim(uint32_t blockDim) { gBlockDim = blockDim; }
void SetError(const std::string& err) { gError = err; }
const std::vector<twin::LaunchTime>& Times() { return gTimes; }
}  // namespace twin_capi

extern "C" {

const char* twin_last_error() { return gError.c_str(); }

uint32_t twin_last_block_dim() { return gBlockDim; }

int twin_traffic_count() { return static_cast<int>(gTraffic.size()); }

// name of buffer i (NUL-terminated into `name`), its read and written bytes.
int twin_traffic_get(int i, char* name, int nameLen, uint64_t* read, uint64_t* written) {
    const auto& all = gTraffic;
    if (i < 0 || i >= static_cast<int>(all.size()) || nameLen < 1) return 2;
    std::strncpy(name, all[i].name.c_str(), nameLen - 1);
    name[nameLen - 1] = '\0';
    *read = all[i].read;
    *written = all[i].written;
    return 0;
}

// Bursts of buffer i: up to `cap` (bytes, count) pairs, smallest first; returns
// how many distinct burst sizes the buffer had (-1 for a bad index).
int twin_traffic_bursts(int i, int cap, uint64_t* bytes, uint64_t* counts) {
    if (i < 0 || i >= static_cast<int>(gTraffic.size())) return -1;
    int k = 0;
    for (const auto& kv : gTraffic[i].bursts) {
        if (k < cap) {
            bytes[k] = kv.first;
            counts[k] = kv.second;
        }
        ++k;
    }
    return k;
}

int twin_batch_norm_stats(const void* x, uint32_t dtype, uint64_t n, uint64_t c, uint64_t l, float eps,
                          uint32_t cores, float* mean, float* invstd) {
    BnStatsTiling t{};
    const int st = BnRowCutTilingFor(BN_OP_STATS, n, c, l, dtype, cores, BN_UB_BYTES, &t.rows);
    if (st != BN_TILING_OK) return Refuse("batch_norm_stats", st);
    t.eps = eps;
    std::vector<uint8_t> ws(BnWorkspaceBytes(BN_OP_STATS, t.rows), 0);
    gBlockDim = t.rows.blockDim;
    const uint64_t xBytes = n * c * l * BnDtypeSize(dtype);
    // Channels cut into parts: (parts, c) partials, then the gather kernel's merge (as bn_ops.h does).
    const uint64_t parts = t.rows.splits;
    std::vector<float> pm(parts > 1 ? parts * c : 0), ps(pm.size()), counts(parts);
    float* outMean = parts > 1 ? pm.data() : mean;
    float* outInvstd = parts > 1 ? ps.data() : invstd;
    const char* outs[2] = {parts > 1 ? "workspace.mean" : "mean", parts > 1 ? "workspace.invstd" : "invstd"};
    const int rc = Report(twin::Launch(
        "batch_norm_stats", t.rows.blockDim,
        {{"input", Gm(x), xBytes}, {outs[0], outMean, parts * c * 4}, {outs[1], outInvstd, parts * c * 4},
         {"workspace", ws.data(), ws.size()}, {"tiling", &t, sizeof(t)}},
        [&] { batch_norm_stats(Gm(x), Gm(outMean), Gm(outInvstd), ws.data(), Gm(&t)); },
        BnUbBytes(BN_OP_STATS, t.rows)));
    if (rc != 0 || parts == 1) return rc;
    for (uint64_t p = 0; p < parts; ++p) counts[p] = static_cast<float>(BnRowPartElems(t.rows, p));
    return MergeStats(pm, ps, counts, c, eps, cores, mean, invstd);
}

int twin_batch_norm_gather_stats_with_counts(const float* mean, const float* invstd, const float* counts,
                                             uint64_t world, uint64_t c, float* runningMean, float* runningVar,
                                             float momentum, float eps, uint32_t cores, float* meanOut,
                                             float* invstdOut) {
    BnGatherTiling t{};
    const int st = BnGatherTilingFor(c, world, cores, BN_UB_BYTES, runningMean != nullptr, runningVar != nullptr,
                                     momentum, eps, &t);
    if (st != BN_TILING_OK) return Refuse("batch_norm_gather_stats_with_counts", st);
    gBlockDim = t.blockDim;
    return Report(twin::Launch(
        "batch_norm_gather_stats_with_counts", t.blockDim,
        {{"mean", Gm(mean), world * c * 4}, {"invstd", Gm(invstd), world * c * 4}, {"counts", Gm(counts), world * 4},
         {"running_mean", runningMean, runningMean ? c * 4 : 0}, {"running_var", runningVar, runningVar ? c * 4 : 0},
         {"mean_out", meanOut, c * 4}, {"invstd_out", invstdOut, c * 4}, {"tiling", &t, sizeof(t)}},
        [&] {
            batch_norm_gather_stats_with_counts(Gm(mean), Gm(invstd), Gm(runningMean), Gm(runningVar), Gm(counts),
                                                Gm(meanOut), Gm(invstdOut), nullptr, Gm(&t));
        },
        BnGatherUbBytes(t)));
}

int twin_batch_norm_elemt(const void* x, uint32_t dtype, uint64_t n, uint64_t c, uint64_t l, const float* weight,
                          const float* bias, const float* mean, const float* invstd, uint32_t cores, void* y) {
    BnElemtTiling t{};
    const int st = BnRowTilingFor(BN_OP_ELEMT, n, c, l, dtype, cores, BN_UB_BYTES, &t.rows);
    if (st != BN_TILING_OK) return Refuse("batch_norm_elemt", st);
    t.hasWeight = weight != nullptr;
    t.hasBias = bias != nullptr;
    gBlockDim = t.rows.blockDim;
    const uint64_t bytes = n * c * l * BnDtypeSize(dtype);
    return Report(twin::Launch("batch_norm_elemt", t.rows.blockDim,
                               {{"input", Gm(x), bytes}, {"weight", Gm(weight), weight ? c * 4 : 0},
                                {"bias", Gm(bias), bias ? c * 4 : 0}, {"mean", Gm(mean), c * 4},
                                {"invstd", Gm(invstd), c * 4}, {"output", y, bytes}, {"tiling", &t, sizeof(t)}},
                               [&] {
                                   batch_norm_elemt(Gm(x), Gm(weight), Gm(bias), Gm(mean), Gm(invstd), Gm(y), nullptr,
                                                    Gm(&t));
                               },
                               BnUbBytes(BN_OP_ELEMT, t.rows)));
}

int twin_batch_norm_backward_reduce(const void* dy, const void* x, uint32_t dtype, uint64_t n, uint64_t c,
                                    uint64_t l, const float* mean, const float* invstd, uint32_t outputMask,
                                    uint32_t cores, float* sumDy, float* sumDyXmu, float* gradWeight,
                                    float* gradBias) {
    BnBackwardReduceTiling t{};
    const int st = BnRowCutTilingFor(BN_OP_BACKWARD_REDUCE, n, c, l, dtype, cores, BN_UB_BYTES, &t.rows);
    if (st != BN_TILING_OK) return Refuse("batch_norm_backward_reduce", st);
    // Channels cut into parts: (parts, c) partial sums, then batch_norm_sum_rows (as bn_ops.h does).
    const uint64_t parts = t.rows.splits;
    t.outputMask = parts > 1 ? uint32_t(BN_OUT_SUMS) : outputMask;
    t.hasWeight = gradWeight != nullptr;
    std::vector<uint8_t> ws(BnWorkspaceBytes(BN_OP_BACKWARD_REDUCE, t.rows), 0);
    std::vector<float> pdy(parts > 1 ? parts * c : 0), pxmu(pdy.size());
    float* outDy = parts > 1 ? pdy.data() : sumDy;
    float* outXmu = parts > 1 ? pxmu.data() : sumDyXmu;
    gBlockDim = t.rows.blockDim;
    const uint64_t bytes = n * c * l * BnDtypeSize(dtype);
    const uint32_t mask = t.outputMask;
    const bool sums = mask & BN_OUT_SUMS;
    const uint64_t sumBytes = sums ? parts * c * 4 : 0;
    const int rc = Report(twin::Launch(
        "batch_norm_backward_reduce", t.rows.blockDim,
        {{"grad_out", Gm(dy), bytes}, {"input", Gm(x), bytes}, {"mean", Gm(mean), c * 4}, {"invstd", Gm(invstd), c * 4},
         {parts > 1 ? "workspace.sum_dy" : "sum_dy", outDy, sumBytes},
         {parts > 1 ? "workspace.sum_dy_xmu" : "sum_dy_xmu", outXmu, sumBytes},
         {"grad_weight", gradWeight, (mask & BN_OUT_GRAD_WEIGHT) ? c * 4 : 0},
         {"grad_bias", gradBias, (mask & BN_OUT_GRAD_BIAS) ? c * 4 : 0}, {"workspace", ws.data(), ws.size()},
         {"tiling", &t, sizeof(t)}},
        [&] {
            batch_norm_backward_reduce(Gm(dy), Gm(x), Gm(mean), Gm(invstd), Gm(outDy), Gm(outXmu), Gm(gradWeight),
                                       Gm(gradBias), ws.data(), Gm(&t));
        },
        BnUbBytes(BN_OP_BACKWARD_REDUCE, t.rows)));
    if (rc != 0 || parts == 1) return rc;
    return MergeSums(pdy, pxmu, parts, c, invstd, outputMask, cores, sumDy, sumDyXmu, gradWeight, gradBias);
}

int twin_batch_norm_backward_elemt(const void* dy, const void* x, uint32_t dtype, uint64_t n, uint64_t c, uint64_t l,
                                   const float* mean, const float* invstd, const float* weight, const float* sumDy,
                                   const float* sumDyXmu, const float* count, uint64_t world, uint32_t cores,
                                   void* dx) {
    BnBackwardElemtTiling t{};
    const int st = BnRowTilingFor(BN_OP_BACKWARD_ELEMT, n, c, l, dtype, cores, BN_UB_BYTES, &t.rows);
    if (st != BN_TILING_OK) return Refuse("batch_norm_backward_elemt", st);
    if (world == 0) return Refuse("batch_norm_backward_elemt", BN_TILING_BAD_WORLD);
    t.hasWeight = weight != nullptr;
    t.world = static_cast<uint32_t>(world);
    gBlockDim = t.rows.blockDim;
    const uint64_t bytes = n * c * l * BnDtypeSize(dtype);
    return Report(twin::Launch(
        "batch_norm_backward_elemt", t.rows.blockDim,
        {{"grad_out", Gm(dy), bytes}, {"input", Gm(x), bytes}, {"mean", Gm(mean), c * 4}, {"invstd", Gm(invstd), c * 4},
         {"weight", Gm(weight), weight ? c * 4 : 0}, {"sum_dy", Gm(sumDy), c * 4}, {"sum_dy_xmu", Gm(sumDyXmu), c * 4},
         {"count", Gm(count), world * 4}, {"grad_input", dx, bytes}, {"tiling", &t, sizeof(t)}},
        [&] {
            batch_norm_backward_elemt(Gm(dy), Gm(x), Gm(mean), Gm(invstd), Gm(weight), Gm(sumDy), Gm(sumDyXmu),
                                      Gm(count), Gm(dx), nullptr, Gm(&t));
        },
        BnUbBytes(BN_OP_BACKWARD_ELEMT, t.rows)));
}

// ---------------------------------------------------------------- C-last path
// x is (rows, c) with c innermost (channels_last, channels_last_3d, 2-D).
// The reducing ops are two launches, as bn_ops.h does them: the partials'
// kernel, then the merge (host/tiling.h, BnClastTilingFor).

int twin_batch_norm_stats_clast(const void* x, uint32_t dtype, uint64_t rows, uint64_t c, float eps, uint32_t cores,
                                float* mean, float* invstd) {
    BnClastStatsTiling t{};
    int st = BnClastTilingFor(BN_OP_STATS, rows, c, dtype, cores, BN_UB_BYTES, &t.g);
    if (st != BN_TILING_OK) return Refuse("batch_norm_stats_clast", st);
    t.eps = eps;
    const uint64_t w = t.g.blockDim;
    std::vector<float> pm(w * c), ps(w * c), counts(w);
    for (uint32_t k = 0; k < w; ++k) counts[k] = static_cast<float>(BnClastCoreRows(t.g, k));
    gBlockDim = t.g.blockDim;
    int rc = Report(twin::Launch("batch_norm_stats_clast", t.g.blockDim,
                                 {{"input", Gm(x), rows * c * BnDtypeSize(dtype)}, {"workspace.mean", pm.data(), w * c * 4},
                                  {"workspace.invstd", ps.data(), w * c * 4}, {"tiling", &t, sizeof(t)}},
                                 [&] { batch_norm_stats_clast(Gm(x), Gm(pm.data()), Gm(ps.data()), nullptr, Gm(&t)); },
                                 BnClastUbBytes(BN_OP_STATS, t.g)));
    if (rc != 0) return rc;
    return MergeStats(pm, ps, counts, c, eps, cores, mean, invstd);
}

int twin_batch_norm_elemt_clast(const void* x, uint32_t dtype, uint64_t rows, uint64_t c, const float* weight,
                                const float* bias, const float* mean, const float* invstd, uint32_t cores, void* y) {
    BnClastElemtTiling t{};
    const int st = BnClastTilingFor(BN_OP_ELEMT, rows, c, dtype, cores, BN_UB_BYTES, &t.g);
    if (st != BN_TILING_OK) return Refuse("batch_norm_elemt_clast", st);
    t.hasWeight = weight != nullptr;
    t.hasBias = bias != nullptr;
    gBlockDim = t.g.blockDim;
    const uint64_t bytes = rows * c * BnDtypeSize(dtype);
    return Report(twin::Launch("batch_norm_elemt_clast", t.g.blockDim,
                               {{"input", Gm(x), bytes}, {"weight", Gm(weight), weight ? c * 4 : 0},
                                {"bias", Gm(bias), bias ? c * 4 : 0}, {"mean", Gm(mean), c * 4},
                                {"invstd", Gm(invstd), c * 4}, {"output", y, bytes}, {"tiling", &t, sizeof(t)}},
                               [&] {
                                   batch_norm_elemt_clast(Gm(x), Gm(weight), Gm(bias), Gm(mean), Gm(invstd), Gm(y),
                                                          nullptr, Gm(&t));
                               },
                               BnClastUbBytes(BN_OP_ELEMT, t.g)));
}

int twin_batch_norm_backward_reduce_clast(const void* dy, const void* x, uint32_t dtype, uint64_t rows, uint64_t c,
                                          const float* mean, const float* invstd, uint32_t outputMask, uint32_t cores,
                                          float* sumDy, float* sumDyXmu, float* gradWeight, float* gradBias) {
    BnClastBackwardReduceTiling t{};
    int st = BnClastTilingFor(BN_OP_BACKWARD_REDUCE, rows, c, dtype, cores, BN_UB_BYTES, &t.g);
    if (st != BN_TILING_OK) return Refuse("batch_norm_backward_reduce_clast", st);
    t.outputMask = outputMask;
    t.hasWeight = gradWeight != nullptr;
    const uint64_t w = t.g.blockDim;
    std::vector<float> pdy(w * c), pxmu(w * c);
    gBlockDim = t.g.blockDim;
    const uint64_t bytes = rows * c * BnDtypeSize(dtype);
    int rc = Report(twin::Launch(
        "batch_norm_backward_reduce_clast", t.g.blockDim,
        {{"grad_out", Gm(dy), bytes}, {"input", Gm(x), bytes}, {"mean", Gm(mean), c * 4},
         {"workspace.sum_dy", pdy.data(), w * c * 4}, {"workspace.sum_dy_xmu", pxmu.data(), w * c * 4},
         {"tiling", &t, sizeof(t)}},
        [&] {
            batch_norm_backward_reduce_clast(Gm(dy), Gm(x), Gm(mean), Gm(pdy.data()), Gm(pxmu.data()), nullptr, Gm(&t));
        },
        BnClastUbBytes(BN_OP_BACKWARD_REDUCE, t.g)));
    if (rc != 0) return rc;
    return MergeSums(pdy, pxmu, w, c, invstd, outputMask, cores, sumDy, sumDyXmu, gradWeight, gradBias);
}

int twin_batch_norm_backward_elemt_clast(const void* dy, const void* x, uint32_t dtype, uint64_t rows, uint64_t c,
                                         const float* mean, const float* invstd, const float* weight,
                                         const float* sumDy, const float* sumDyXmu, const float* count, uint64_t world,
                                         uint32_t cores, void* dx) {
    BnClastBackwardElemtTiling t{};
    const int st = BnClastTilingFor(BN_OP_BACKWARD_ELEMT, rows, c, dtype, cores, BN_UB_BYTES, &t.g);
    if (st != BN_TILING_OK) return Refuse("batch_norm_backward_elemt_clast", st);
    if (world == 0) return Refuse("batch_norm_backward_elemt_clast", BN_TILING_BAD_WORLD);
    t.hasWeight = weight != nullptr;
    t.world = static_cast<uint32_t>(world);
    gBlockDim = t.g.blockDim;
    const uint64_t bytes = rows * c * BnDtypeSize(dtype);
    return Report(twin::Launch(
        "batch_norm_backward_elemt_clast", t.g.blockDim,
        {{"grad_out", Gm(dy), bytes}, {"input", Gm(x), bytes}, {"mean", Gm(mean), c * 4}, {"invstd", Gm(invstd), c * 4},
         {"weight", Gm(weight), weight ? c * 4 : 0}, {"sum_dy", Gm(sumDy), c * 4}, {"sum_dy_xmu", Gm(sumDyXmu), c * 4},
         {"count", Gm(count), world * 4}, {"grad_input", dx, bytes}, {"tiling", &t, sizeof(t)}},
        [&] {
            batch_norm_backward_elemt_clast(Gm(dy), Gm(x), Gm(mean), Gm(invstd), Gm(weight), Gm(sumDy), Gm(sumDyXmu),
                                            Gm(count), Gm(dx), nullptr, Gm(&t));
        },
        BnClastUbBytes(BN_OP_BACKWARD_ELEMT, t.g)));
}

// Selects the SoC whose core count and UB size launches are checked against
// ("" for NPU_SYNCBN_SOC or the default). 0 ok, 2 an unknown name.
int twin_set_soc(const char* name) {
    if (twin::SetSoc(name ? name : "")) return 0;
    gError = std::string("unknown SoC '") + (name ? name : "") + "'";
    return 2;
}

// Whether the pipe model takes bisheng's --cce-auto-sync as on (1, as
// ascendc_library builds) or off (0: S needs its own events too).
void twin_set_auto_sync(int on) { twin::SetAutoSync(on != 0); }

// Whether the compiler's auto-sync orders vector reads after vector writes
// (PipeBarrier<PIPE_V>); 0 models --cce-auto-sync=off for the vector pipe.
void twin_set_vector_auto_sync(int on) { twin::SetVectorAutoSync(on != 0); }

const char* twin_soc_name() { return twin::CurrentSoc().name; }
uint32_t twin_soc_cores() { return twin::CurrentSoc().vectorCores; }
uint32_t twin_soc_ub_bytes() { return twin::CurrentSoc().ubBytes; }

// Runs one of the test kernels on a 1 KiB buffer (zeroed, or filled with 1.0f
// for the kernel that needs a dirty workspace), with the UB plan its row gives.
int twin_run_test_kernel(const char* name, uint32_t cores) {
    using Entry = void (*)(GM_ADDR, GM_ADDR, GM_ADDR);
    struct Named { const char* name; Entry entry; uint64_t ubPlan; float fill; };
    static const Named kernels[] = {
        {"twin_broken_ub_overflow", twin_broken_ub_overflow, 0, 0.0f},
        {"twin_broken_misaligned_copy", twin_broken_misaligned_copy, 0, 0.0f},
        {"twin_broken_queue_leak", twin_broken_queue_leak, 0, 0.0f},
        {"twin_broken_deque_empty", twin_broken_deque_empty, 0, 0.0f},
        {"twin_broken_double_alloc", twin_broken_double_alloc, 0, 0.0f},
        {"twin_broken_skip_syncall", twin_broken_skip_syncall, 0, 0.0f},
        {"twin_broken_gm_overrun", twin_broken_gm_overrun, 0, 0.0f},
        {"twin_broken_syncall_not_mix", twin_broken_syncall_not_mix, 0, 0.0f},
        // the correct software-SyncAll kernel, on a workspace the host did not zero
        {"twin_broken_soft_syncall_dirty", twin_ok_soft_syncall, 0, 1.0f},
        {"twin_broken_ub_plan", twin_broken_ub_plan, 4096, 0.0f},  // the kernel allocates 16 KiB more
        {"twin_broken_too_many_buffers", twin_broken_too_many_buffers, 0, 0.0f},
        {"twin_broken_copy_params", twin_broken_copy_params, 0, 0.0f},
        {"twin_broken_repeat", twin_broken_repeat, 0, 0.0f},
        {"twin_broken_pipe_mte2_v", twin_broken_pipe_mte2_v, 0, 0.0f},
        {"twin_broken_pipe_v_mte3", twin_broken_pipe_v_mte3, 0, 0.0f},
        {"twin_broken_pipe_scalar_after_deque", twin_broken_pipe_scalar_after_deque, 0, 0.0f},
        {"twin_ok_pipe_events", twin_ok_pipe_events, 0, 0.0f},
        {"twin_broken_vector_raw", twin_broken_vector_raw, 0, 0.0f},
        {"twin_ok_vector_raw", twin_ok_vector_raw, 0, 0.0f},
        {"twin_ok_copy", twin_ok_copy, 512, 0.0f},
        {"twin_broken_compares_count", twin_broken_compares_count, 0, 0.0f},
        {"twin_broken_select_scratch", twin_broken_select_scratch, 0, 0.0f},
        {"twin_ok_relu_gate", twin_ok_relu_gate, 0, 0.0f},
        {"twin_ok_syncall_mix", twin_ok_syncall_mix, 0, 0.0f},
        {"twin_ok_soft_syncall", twin_ok_soft_syncall, 0, 0.0f},
    };
    for (const Named& k : kernels) {
        if (std::strcmp(k.name, name) == 0) {
            std::vector<float> buf(256, k.fill);
            gBlockDim = cores;
            return Report(twin::Launch(name, cores, {{"buffer", buf.data(), buf.size() * 4}},
                                       [&] { k.entry(Gm(buf.data()), nullptr, nullptr); }, k.ubPlan));
        }
    }
    gError = std::string("no test kernel named '") + name + "'";
    return 2;
}

}  // extern "C"

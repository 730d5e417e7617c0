/*
 * Host side of our ops on an Ascend device (the five and the fused
 * activation's elemt_act / backward_reduce_relu), for any way of launching the
 * kernels: argument checks, output allocation, the host tiling (tiling.h), the
 * workspace, and each kernel's launch arguments in their order. Written once,
 * used twice:
 *   npu_ops.cpp                               launches through ACLRT_LAUNCH_KERNEL on a real NPU;
 *   npu_syncbn/emulation/csrc/kernels.cpp     launches the same sources in the CPU twin on the
 *                                             emulated "npu" device (NPU_SYNCBN_EMULATE_NPU=1).
 *
 * A Device policy provides
 *   static DeviceLimits Limits(const at::Tensor& onDevice);   cores and UB a launch may use
 *   static void Launch(Kernel k, const char* op, uint32_t blockDim,
 *                      const std::vector<GmArg>& args, uint64_t ubPlan);
 * where args are the kernel's GM arguments in its entry's order and ubPlan the
 * UB bytes the tiling planned per core (the twin checks the kernel against it).
 * Per-channel tensors reach the kernels as contiguous float32.
 *
 * Layout (Arrange): chosen once per op from the input's strides.
 *   C innermost and dense: channels_last (4-D), channels_last_3d (5-D), 2-D
 *     (N, C) (already C-last in memory) -> the C-last kernels (*_clast), on
 *     the input as it is: no layout copy;
 *   contiguous (N, C, *) -> the row kernels;
 *   both at once (a dim of size 1) -> the layout with the longer contiguous
 *     run (C-last when C >= the inner size);
 *   anything else (not dense: a strided slice, a permutation of other dims) ->
 *     ONE copy, x.contiguous(), then the rule above.
 * grad_out takes the layout chosen for input (a copy only when it differs).
 * Outputs of the input's shape keep its memory format (at::empty_like), as
 * torch's BatchNorm does; the (C,) outputs are unchanged.
 */
#ifndef NPU_SYNCBN_HOST_BN_OPS_H
#define NPU_SYNCBN_HOST_BN_OPS_H

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>

#include "device_constants.h"
#include "soc.h"
#include "tiling.h"

namespace bn_ops {

using at::Tensor;
using OptTensor = c10::optional<Tensor>;

// What a launch may use on one device.
struct DeviceLimits {
    uint32_t cores;    // vector cores the blocks may occupy, 1..BN_MAX_CORES
    uint32_t ubBytes;  // UB per vector core the tiling may plan
};

enum class Kernel {
    Stats, GatherStats, Elemt, BackwardReduce, BackwardElemt,
    StatsClast, ElemtClast, BackwardReduceClast, BackwardElemtClast, SumRows,
    ElemtAct, ElemtActClast, BackwardReduceRelu, BackwardReduceReluClast,
};

inline const char* KernelName(Kernel k) {
    switch (k) {
        case Kernel::Stats: return "batch_norm_stats";
        case Kernel::GatherStats: return "batch_norm_gather_stats_with_counts";
        case Kernel::Elemt: return "batch_norm_elemt";
        case Kernel::BackwardReduce: return "batch_norm_backward_reduce";
        case Kernel::BackwardElemt: return "batch_norm_backward_elemt";
        case Kernel::StatsClast: return "batch_norm_stats_clast";
        case Kernel::ElemtClast: return "batch_norm_elemt_clast";
        case Kernel::BackwardReduceClast: return "batch_norm_backward_reduce_clast";
        case Kernel::BackwardElemtClast: return "batch_norm_backward_elemt_clast";
        case Kernel::SumRows: return "batch_norm_sum_rows";
        case Kernel::ElemtAct: return "batch_norm_elemt_act";
        case Kernel::ElemtActClast: return "batch_norm_elemt_act_clast";
        case Kernel::BackwardReduceRelu: return "batch_norm_backward_reduce_relu";
        case Kernel::BackwardReduceReluClast: return "batch_norm_backward_reduce_relu_clast";
    }
    return "?";
}

// One GM argument of a launch: its name (for errors and the twin's bounds
// checks) and the tensor (undefined for an absent optional argument).
struct GmArg {
    const char* name;
    Tensor t;
};

inline void* Ptr(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

// NPU_SYNCBN_BLOCK_DIM, or 0 when unset. It can only lower the core count: more
// blocks than physical cores would run in rounds (and a barrier kernel hang).
inline uint32_t BlockDimCap() {
    const char* env = std::getenv("NPU_SYNCBN_BLOCK_DIM");
    if (env == nullptr || *env == '\0') return 0;
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(env, &end, 10);
    TORCH_CHECK(errno == 0 && *end == '\0' && v >= 1, "NPU_SYNCBN_BLOCK_DIM must be a positive integer, got '", env,
                "'");
    return v > long(BN_MAX_CORES) ? BN_MAX_CORES : uint32_t(v);
}

// Limits from what the platform reports: at most BN_MAX_CORES cores (the
// tiling's bound), NPU_SYNCBN_BLOCK_DIM may lower them; UB capped at the 910B
// size the twin checks plans against, less the reserve of soc.h.
inline DeviceLimits LimitsFrom(int64_t cores, int64_t ubBytes) {
    DeviceLimits lim{};
    lim.cores = cores > int64_t(BN_MAX_CORES) ? BN_MAX_CORES : uint32_t(cores);
    const uint32_t cap = BlockDimCap();
    if (cap != 0 && cap < lim.cores) lim.cores = cap;
    const int64_t ub = ubBytes > 0 && ubBytes < int64_t(BN_UB_BYTES) ? ubBytes : int64_t(BN_UB_BYTES);
    lim.ubBytes = uint32_t(ub) - BN_UB_RESERVE_BYTES;
    return lim;
}

inline uint32_t Dtype(const Tensor& x) {
    switch (x.scalar_type()) {
        case at::kFloat: return BN_FLOAT32;
        case at::kHalf: return BN_FLOAT16;
        case at::kBFloat16: return BN_BFLOAT16;
        default: TORCH_CHECK(false, "npu_syncbn kernels take float32, float16 or bfloat16 input, got ", x.scalar_type());
    }
}

// (N, C, inner) of an (N, C, *) tensor.
inline std::tuple<uint64_t, uint64_t, uint64_t> Shape(const Tensor& x) {
    TORCH_CHECK(x.dim() >= 2, "input must have shape (N, C, *), got ", x.sizes());
    const uint64_t n = x.size(0), c = x.size(1);
    return {n, c, n > 0 && c > 0 ? uint64_t(x.numel()) / (n * c) : 0};
}

enum class Layout { Row, CLast };

// input as the kernels read it, and its layout (the rule at the top of this file).
inline std::tuple<Tensor, Layout> Arrange(const Tensor& input) {
    auto [n, c, l] = Shape(input);
    (void)n;
    const bool clast = input.movedim(1, -1).is_contiguous();
    const bool row = input.is_contiguous();
    if (clast && (!row || c >= l)) return {input, Layout::CLast};
    if (row) return {input, Layout::Row};
    return Arrange(input.contiguous());  // the one documented copy of a non-dense input
}

// t in the memory order of `layout` (t itself when it already is).
inline Tensor InLayout(const Tensor& t, Layout layout) {
    return layout == Layout::CLast ? t.movedim(1, -1).contiguous().movedim(-1, 1) : t.contiguous();
}

inline Tensor F32(const Tensor& t) { return t.to(at::kFloat).contiguous(); }

inline Tensor F32(const OptTensor& t) { return t.has_value() && t->defined() ? F32(*t) : Tensor(); }

inline void CheckTiling(int status, const char* op) {
    TORCH_CHECK(status == BN_TILING_OK, "npu_syncbn::", op, ": ", BnTilingStatusText(status));
}

template <class Device>
struct Ops {
    static std::tuple<Tensor, Tensor> Stats(const Tensor& input, double eps) {
        const c10::DeviceGuard guard(input.device());
        const DeviceLimits lim = Device::Limits(input);
        auto [x, layout] = Arrange(input);
        auto [n, c, l] = Shape(x);
        auto f32 = x.options().dtype(at::kFloat);
        if (x.numel() == 0) {  // aten's values for an empty batch
            return {at::zeros({int64_t(c)}, f32), at::full({int64_t(c)}, 1.0 / std::sqrt(eps), f32)};
        }
        // The kernels write every entry: no fill kernels.
        Tensor mean = at::empty({int64_t(c)}, f32), invstd = at::empty({int64_t(c)}, f32);
        if (layout == Layout::CLast) {
            StatsClast(x, n * l, c, eps, lim, mean, invstd);
            return {mean, invstd};
        }
        BnStatsTiling t{};
        CheckTiling(BnRowCutTilingFor(BN_OP_STATS, n, c, l, Dtype(x), lim.cores, lim.ubBytes, &t.rows), "batch_norm_stats");
        t.eps = float(eps);
        // Channels cut into parts: (splits, C) partials, then the gather kernel's merge.
        const int64_t parts = t.rows.splits;
        Tensor pm = parts > 1 ? at::empty({parts, int64_t(c)}, f32) : mean;
        Tensor ps = parts > 1 ? at::empty({parts, int64_t(c)}, f32) : invstd;
        Device::Launch(Kernel::Stats, "batch_norm_stats", t.rows.blockDim,
                       {{"input", x}, {"mean", pm}, {"invstd", ps},
                        {"workspace", Workspace(BnWorkspaceBytes(BN_OP_STATS, t.rows), x)}, {"tiling", DeviceTiling(t, x)}},
                       BnUbBytes(BN_OP_STATS, t.rows));
        if (parts > 1) {
            std::vector<float> counts(static_cast<size_t>(parts));
            for (int64_t p = 0; p < parts; ++p) counts[p] = float(BnRowPartElems(t.rows, uint64_t(p)));
            MergeStats(pm, ps, counts, eps, lim, mean, invstd);
        }
        return {mean, invstd};
    }

    static std::tuple<Tensor, Tensor> GatherStats(const Tensor& input, const Tensor& mean, const Tensor& invstd,
                                                  const OptTensor& runningMean, const OptTensor& runningVar,
                                                  double momentum, double eps, const Tensor& counts) {
        (void)input;  // its dtype decided the route; the statistics are (W, C)
        const c10::DeviceGuard guard(mean.device());
        const DeviceLimits lim = Device::Limits(mean);
        TORCH_CHECK(mean.dim() == 2 && invstd.sizes() == mean.sizes(), "mean and invstd must have shape (W, C)");
        const uint64_t world = mean.size(0), c = mean.size(1);
        TORCH_CHECK(uint64_t(counts.numel()) == world, "counts must have one entry per row of mean");
        const Tensor m = F32(mean), s = F32(invstd), cnt = F32(counts.reshape({-1}));
        Tensor rm = F32(runningMean), rv = F32(runningVar);
        Tensor meanOut = at::empty({int64_t(c)}, m.options());
        Tensor invstdOut = at::empty({int64_t(c)}, m.options());
        Gather("batch_norm_gather_stats_with_counts", m, s, rm, rv, cnt, momentum, eps, lim.cores, lim, meanOut,
               invstdOut);
        // In place, in the caller's dtype / layout (no-op copies when already float32 contiguous).
        if (rm.defined() && !rm.is_same(*runningMean)) runningMean->copy_(rm);
        if (rv.defined() && !rv.is_same(*runningVar)) runningVar->copy_(rv);
        return {meanOut, invstdOut};
    }

    static Tensor Elemt(const Tensor& input, const OptTensor& weight, const OptTensor& bias, const Tensor& mean,
                        const Tensor& invstd, double eps) {
        (void)eps;  // invstd already holds it, as in aten
        return ElemtLaunch(input, weight, bias, mean, invstd, c10::nullopt, false, false);
    }

    // relu(elemt(...) + residual), each part optional: batch_norm_elemt_act.
    static Tensor ElemtAct(const Tensor& input, const OptTensor& weight, const OptTensor& bias, const Tensor& mean,
                           const Tensor& invstd, double eps, const OptTensor& residual, bool relu) {
        (void)eps;
        return ElemtLaunch(input, weight, bias, mean, invstd, residual, relu, true);
    }

    static std::tuple<Tensor, Tensor, Tensor, Tensor> BackwardReduce(const Tensor& gradOut, const Tensor& input,
                                                                     const Tensor& mean, const Tensor& invstd,
                                                                     const OptTensor& weight, bool inputG, bool weightG,
                                                                     bool biasG) {
        // The project schema returns all four (C,) tensors, so all four are computed.
        (void)inputG, (void)weightG, (void)biasG;
        auto r = ReduceLaunch(gradOut, Tensor(), input, mean, invstd, weight);
        return {std::get<0>(r), std::get<1>(r), std::get<2>(r), std::get<3>(r)};
    }

    // backward_reduce of grad_sum = threshold_backward(grad_out, output, 0),
    // and grad_sum itself: batch_norm_backward_reduce_relu.
    static std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> BackwardReduceRelu(
        const Tensor& gradOut, const Tensor& output, const Tensor& input, const Tensor& mean, const Tensor& invstd,
        const OptTensor& weight, bool inputG, bool weightG, bool biasG) {
        (void)inputG, (void)weightG, (void)biasG;
        return ReduceLaunch(gradOut, output, input, mean, invstd, weight);
    }

    static Tensor BackwardElemt(const Tensor& gradOut, const Tensor& input, const Tensor& mean, const Tensor& invstd,
                                const OptTensor& weight, const Tensor& sumDy, const Tensor& sumDyXmu,
                                const Tensor& count) {
        const c10::DeviceGuard guard(input.device());
        const DeviceLimits lim = Device::Limits(input);
        auto [x, layout] = Arrange(input);
        const Tensor dy = InLayout(gradOut, layout);
        TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(), "grad_out must match input");
        auto [n, c, l] = Shape(x);
        Tensor dx = at::empty_like(x);  // x's (and dy's) memory format
        if (x.numel() == 0) return dx;
        const Tensor cnt = F32(count.reshape({-1}));
        TORCH_CHECK(cnt.numel() >= 1, "count must have at least one element");
        const Tensor w = F32(weight);
        // The same arguments for both layouts; the tiling comes last.
        std::vector<GmArg> args = {{"grad_out", dy}, {"input", x}, {"mean", F32(mean)}, {"invstd", F32(invstd)},
                                   {"weight", w}, {"sum_dy", F32(sumDy)}, {"sum_dy_xmu", F32(sumDyXmu)},
                                   {"count", cnt}, {"grad_input", dx}, {"workspace", Workspace(0, x)}};
        if (layout == Layout::CLast) {
            BnClastBackwardElemtTiling t{};
            CheckTiling(BnClastTilingFor(BN_OP_BACKWARD_ELEMT, n * l, c, Dtype(x), lim.cores, lim.ubBytes, &t.g),
                        "batch_norm_backward_elemt");
            t.hasWeight = w.defined();
            t.world = uint32_t(cnt.numel());
            args.push_back({"tiling", DeviceTiling(t, x)});
            Device::Launch(Kernel::BackwardElemtClast, "batch_norm_backward_elemt", t.g.blockDim, args,
                           BnClastUbBytes(BN_OP_BACKWARD_ELEMT, t.g));
            return dx;
        }
        BnBackwardElemtTiling t{};
        CheckTiling(BnRowTilingFor(BN_OP_BACKWARD_ELEMT, n, c, l, Dtype(x), lim.cores, lim.ubBytes, &t.rows),
                    "batch_norm_backward_elemt");
        t.hasWeight = w.defined();
        t.world = uint32_t(cnt.numel());
        args.push_back({"tiling", DeviceTiling(t, x)});
        Device::Launch(Kernel::BackwardElemt, "batch_norm_backward_elemt", t.rows.blockDim, args,
                       BnUbBytes(BN_OP_BACKWARD_ELEMT, t.rows));
        return dx;
    }

private:
    // elemt (fused: the act kernels, with residual / relu) in either layout.
    static Tensor ElemtLaunch(const Tensor& input, const OptTensor& weight, const OptTensor& bias, const Tensor& mean,
                              const Tensor& invstd, const OptTensor& residual, bool relu, bool fused) {
        const c10::DeviceGuard guard(input.device());
        const DeviceLimits lim = Device::Limits(input);
        auto [x, layout] = Arrange(input);
        auto [n, c, l] = Shape(x);
        Tensor y = at::empty_like(x);  // x's memory format
        if (x.numel() == 0) return y;
        const Tensor w = F32(weight), b = F32(bias);
        const bool hasResidual = residual.has_value() && residual->defined();
        const Tensor r = hasResidual ? InLayout(*residual, layout) : Tensor();
        TORCH_CHECK(!hasResidual || (r.sizes() == x.sizes() && r.scalar_type() == x.scalar_type()),
                    "residual must match input");
        const BnOp op = fused ? BN_OP_ELEMT_ACT : BN_OP_ELEMT;
        // The same arguments for both layouts; the tiling comes last.
        std::vector<GmArg> args = {{"input", x}, {"weight", w}, {"bias", b}, {"mean", F32(mean)},
                                   {"invstd", F32(invstd)}};
        if (fused) args.push_back({"residual", r});
        args.insert(args.end(), {{"output", y}, {"workspace", Workspace(0, x)}});
        // The fields both layouts' tilings share, then the tiling as the last argument.
        auto finish = [&](auto& t, uint64_t tileElems) {
            t.hasWeight = w.defined();
            t.hasBias = b.defined();
            t.act.hasResidual = hasResidual;
            t.act.relu = relu;
            t.act.gateElems = fused ? BnGateElems(tileElems) : 0;
            args.push_back({"tiling", DeviceTiling(t, x)});
        };
        if (layout == Layout::CLast) {
            BnClastElemtTiling t{};
            CheckTiling(BnClastTilingFor(op, n * l, c, Dtype(x), lim.cores, lim.ubBytes, &t.g), "batch_norm_elemt");
            finish(t, t.g.tileElems);
            Device::Launch(fused ? Kernel::ElemtActClast : Kernel::ElemtClast, "batch_norm_elemt", t.g.blockDim, args,
                           BnClastUbBytes(op, t.g));
            return y;
        }
        BnElemtTiling t{};
        CheckTiling(BnRowTilingFor(op, n, c, l, Dtype(x), lim.cores, lim.ubBytes, &t.rows), "batch_norm_elemt");
        finish(t, t.rows.tileElems);
        Device::Launch(fused ? Kernel::ElemtAct : Kernel::Elemt, "batch_norm_elemt", t.rows.blockDim, args,
                       BnUbBytes(op, t.rows));
        return y;
    }

    // backward_reduce in either layout; with `output` defined, the relu
    // kernels: dy gated by output's ReLU mask, grad_sum returned last
    // (undefined otherwise).
    static std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> ReduceLaunch(const Tensor& gradOut, const Tensor& output,
                                                                           const Tensor& input, const Tensor& mean,
                                                                           const Tensor& invstd, const OptTensor& weight) {
        const c10::DeviceGuard guard(input.device());
        const DeviceLimits lim = Device::Limits(input);
        auto [x, layout] = Arrange(input);
        const Tensor dy = InLayout(gradOut, layout);
        TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(), "grad_out must match input");
        const bool relu = output.defined();
        const Tensor y = relu ? InLayout(output, layout) : Tensor();
        TORCH_CHECK(!relu || (y.sizes() == x.sizes() && y.scalar_type() == x.scalar_type()), "output must match input");
        Tensor gradSum = relu ? at::empty_like(x) : Tensor();
        auto [n, c, l] = Shape(x);
        auto f32 = x.options().dtype(at::kFloat);
        // The kernels write all four whole (the row kernel with one part, else the
        // merge): no fill kernels, but for an empty batch (sums of nothing).
        const int64_t channels = int64_t(c);
        auto make = [&x, &f32, channels]() {
            return x.numel() > 0 ? at::empty({channels}, f32) : at::zeros({channels}, f32);
        };
        Tensor sumDy = make(), sumDyXmu = make(), gradWeight = make(), gradBias = make();
        const BnOp op = relu ? BN_OP_BACKWARD_REDUCE_RELU : BN_OP_BACKWARD_REDUCE;
        if (x.numel() > 0 && layout == Layout::CLast) {
            BackwardReduceClast(op, dy, y, x, n * l, c, F32(mean), F32(invstd), lim, sumDy, sumDyXmu, gradWeight,
                                gradBias, gradSum);
        } else if (x.numel() > 0) {
            BnBackwardReduceTiling t{};
            CheckTiling(BnRowCutTilingFor(op, n, c, l, Dtype(x), lim.cores, lim.ubBytes, &t.rows),
                        "batch_norm_backward_reduce");
            // Channels cut into parts: (splits, C) partial sums, then batch_norm_sum_rows.
            const int64_t parts = t.rows.splits;
            const uint32_t allOutputs = BN_OUT_SUMS | BN_OUT_GRAD_WEIGHT | BN_OUT_GRAD_BIAS;
            t.outputMask = parts > 1 ? uint32_t(BN_OUT_SUMS) : allOutputs;
            t.hasWeight = weight.has_value() && weight->defined();
            t.act.relu = relu;
            t.act.gateElems = relu ? BnGateElems(t.rows.tileElems) : 0;
            const Tensor meanF = F32(mean), invstdF = F32(invstd);
            Tensor pdy = parts > 1 ? at::empty({parts, int64_t(c)}, f32) : sumDy;
            Tensor pxmu = parts > 1 ? at::empty({parts, int64_t(c)}, f32) : sumDyXmu;
            std::vector<GmArg> args = {{"grad_out", dy}};
            if (relu) args.push_back({"output", y});
            args.insert(args.end(), {{"input", x}, {"mean", meanF}, {"invstd", invstdF}, {"sum_dy", pdy},
                                     {"sum_dy_xmu", pxmu}, {"grad_weight", gradWeight}, {"grad_bias", gradBias}});
            if (relu) args.push_back({"grad_sum", gradSum});
            args.insert(args.end(), {{"workspace", Workspace(BnWorkspaceBytes(op, t.rows), x)},
                                     {"tiling", DeviceTiling(t, x)}});
            Device::Launch(relu ? Kernel::BackwardReduceRelu : Kernel::BackwardReduce, "batch_norm_backward_reduce",
                           t.rows.blockDim, args, BnUbBytes(op, t.rows));
            if (parts > 1) SumRows(pdy, pxmu, invstdF, allOutputs, lim, sumDy, sumDyXmu, gradWeight, gradBias);
        }
        if (weight.has_value() && weight->defined()) {
            gradWeight = gradWeight.to(weight->scalar_type());
            gradBias = gradBias.to(weight->scalar_type());
        }
        return {sumDy, sumDyXmu, gradWeight, gradBias, gradSum};
    }

    // The gather kernel over (W, C) rows: the ranks of GatherStats, or the
    // per-core partial rows of the C-last stats (then on `cores` cores).
    static void Gather(const char* op, const Tensor& m, const Tensor& s, const Tensor& rm, const Tensor& rv,
                       const Tensor& cnt, double momentum, double eps, uint32_t cores, const DeviceLimits& lim,
                       const Tensor& meanOut, const Tensor& invstdOut) {
        BnGatherTiling t{};
        CheckTiling(BnGatherTilingFor(uint64_t(m.size(1)), uint64_t(m.size(0)), cores, lim.ubBytes, rm.defined(),
                                      rv.defined(), float(momentum), float(eps), &t),
                    op);
        Device::Launch(Kernel::GatherStats, op, t.blockDim,
                       {{"mean", m}, {"invstd", s}, {"running_mean", rm}, {"running_var", rv}, {"counts", cnt},
                        {"mean_out", meanOut}, {"invstd_out", invstdOut}, {"workspace", Workspace(0, m)},
                        {"tiling", DeviceTiling(t, m)}},
                       BnGatherUbBytes(t));
    }

    // C-last stats: per-core (mean, invstd) rows of x (rows, c), then their
    // Chan merge by the gather kernel (counts: rows per core) on the same
    // stream: the stream order is the barrier, no kernel waits for another core.
    static void StatsClast(const Tensor& x, uint64_t rows, uint64_t c, double eps, const DeviceLimits& lim,
                           const Tensor& mean, const Tensor& invstd) {
        BnClastStatsTiling t{};
        CheckTiling(BnClastTilingFor(BN_OP_STATS, rows, c, Dtype(x), lim.cores, lim.ubBytes, &t.g), "batch_norm_stats");
        t.eps = float(eps);
        auto f32 = x.options().dtype(at::kFloat);
        const int64_t w = t.g.blockDim;
        Tensor pm = at::empty({w, int64_t(c)}, f32), ps = at::empty({w, int64_t(c)}, f32);
        Device::Launch(Kernel::StatsClast, "batch_norm_stats", t.g.blockDim,
                       {{"input", x}, {"mean", pm}, {"invstd", ps}, {"workspace", Workspace(0, x)},
                        {"tiling", DeviceTiling(t, x)}},
                       BnClastUbBytes(BN_OP_STATS, t.g));
        std::vector<float> counts(static_cast<size_t>(w));
        for (uint32_t k = 0; k < uint32_t(w); ++k) counts[k] = float(BnClastCoreRows(t.g, k));
        MergeStats(pm, ps, counts, eps, lim, mean, invstd);
    }

    // The merge of stats' (parts, C) partial (mean, invstd) rows of `counts`
    // elements each: the gather kernel's Chan merge, on the same stream.
    static void MergeStats(const Tensor& pm, const Tensor& ps, const std::vector<float>& counts, double eps,
                           const DeviceLimits& lim, const Tensor& mean, const Tensor& invstd) {
        Gather("batch_norm_stats", pm, ps, Tensor(), Tensor(), DeviceFloats(counts, pm), 0.0, eps,
               BnMergeCores(uint64_t(pm.size(1)), lim.cores), lim, mean, invstd);
    }

    // C-last backward_reduce: per-core (sum_dy, sum_dy_xmu) rows, then their
    // sums (and grad_weight / grad_bias) by batch_norm_sum_rows on the same stream.
    // (op BN_OP_BACKWARD_REDUCE_RELU: the relu kernel, gated by y, writing gradSum.)
    static void BackwardReduceClast(BnOp op, const Tensor& dy, const Tensor& y, const Tensor& x, uint64_t rows,
                                    uint64_t c, const Tensor& mean, const Tensor& invstd, const DeviceLimits& lim,
                                    const Tensor& sumDy, const Tensor& sumDyXmu, const Tensor& gradWeight,
                                    const Tensor& gradBias, const Tensor& gradSum) {
        const bool relu = op == BN_OP_BACKWARD_REDUCE_RELU;
        BnClastBackwardReduceTiling t{};
        CheckTiling(BnClastTilingFor(op, rows, c, Dtype(x), lim.cores, lim.ubBytes, &t.g), "batch_norm_backward_reduce");
        t.outputMask = BN_OUT_SUMS | BN_OUT_GRAD_WEIGHT | BN_OUT_GRAD_BIAS;
        t.act.relu = relu;
        t.act.gateElems = relu ? BnGateElems(t.g.tileElems) : 0;
        auto f32 = x.options().dtype(at::kFloat);
        const int64_t w = t.g.blockDim;
        Tensor pdy = at::empty({w, int64_t(c)}, f32), pxmu = at::empty({w, int64_t(c)}, f32);
        std::vector<GmArg> args = {{"grad_out", dy}};
        if (relu) args.push_back({"output", y});
        args.insert(args.end(), {{"input", x}, {"mean", mean}, {"sum_dy", pdy}, {"sum_dy_xmu", pxmu}});
        if (relu) args.push_back({"grad_sum", gradSum});
        args.insert(args.end(), {{"workspace", Workspace(0, x)}, {"tiling", DeviceTiling(t, x)}});
        Device::Launch(relu ? Kernel::BackwardReduceReluClast : Kernel::BackwardReduceClast,
                       "batch_norm_backward_reduce", t.g.blockDim, args, BnClastUbBytes(op, t.g));
        SumRows(pdy, pxmu, invstd, t.outputMask, lim, sumDy, sumDyXmu, gradWeight, gradBias);
    }

    // The merge of backward_reduce's (rows, C) partial sums: their column sums,
    // grad_weight = sum_dy_xmu * invstd and grad_bias = sum_dy, as mask asks.
    static void SumRows(const Tensor& pdy, const Tensor& pxmu, const Tensor& invstd, uint32_t mask,
                        const DeviceLimits& lim, const Tensor& sumDy, const Tensor& sumDyXmu,
                        const Tensor& gradWeight, const Tensor& gradBias) {
        BnSumRowsTiling m{};
        CheckTiling(BnSumRowsTilingFor(uint64_t(pdy.size(1)), uint64_t(pdy.size(0)), lim.cores, lim.ubBytes, mask, &m),
                    "batch_norm_backward_reduce");
        Device::Launch(Kernel::SumRows, "batch_norm_backward_reduce", m.blockDim,
                       {{"partial_sum_dy", pdy}, {"partial_sum_dy_xmu", pxmu}, {"invstd", invstd}, {"sum_dy", sumDy},
                        {"sum_dy_xmu", sumDyXmu}, {"grad_weight", gradWeight}, {"grad_bias", gradBias},
                        {"workspace", Workspace(0, pdy)}, {"tiling", DeviceTiling(m, pdy)}},
                       BnSumRowsUbBytes(m));
    }
};

}  // namespace bn_ops

// The ops of `ns` (the five and the two fused-activation ops) as PrivateUse1 kernels launched through `Device`.
#define BN_OPS_REGISTER(ns, Device)                                                         \
    TORCH_LIBRARY_IMPL(ns, PrivateUse1, m) {                                                \
        m.impl("batch_norm_stats", &bn_ops::Ops<Device>::Stats);                            \
        m.impl("batch_norm_gather_stats_with_counts", &bn_ops::Ops<Device>::GatherStats);   \
        m.impl("batch_norm_elemt", &bn_ops::Ops<Device>::Elemt);                            \
        m.impl("batch_norm_backward_reduce", &bn_ops::Ops<Device>::BackwardReduce);         \
        m.impl("batch_norm_backward_elemt", &bn_ops::Ops<Device>::BackwardElemt);           \
        m.impl("batch_norm_elemt_act", &bn_ops::Ops<Device>::ElemtAct);                     \
        m.impl("batch_norm_backward_reduce_relu", &bn_ops::Ops<Device>::BackwardReduceRelu); \
    }

#endif  // NPU_SYNCBN_HOST_BN_OPS_H

/*
 * NPU launch glue: our AscendC kernels as the PrivateUse1 (Ascend) kernels of the
 * npu_syncbn ops. The schemas are defined from Python (npu_syncbn/ops/schema.py);
 * npu_syncbn/ops/npu.py loads this library (libnpu_syncbn_npu.so) when present
 * and otherwise falls back to torch-npu's aclnn ops.
 *
 * Each op: check dtypes, make inputs contiguous, compute the tiling on the host
 * (tiling.h, the same code the CPU twin runs), copy it to the device, and launch
 * with ACLRT_LAUNCH_KERNEL on torch-npu's current stream. Per-channel tensors
 * are passed as float32. Not buildable or testable without CANN + torch-npu.
 */
#include <cstring>
#include <tuple>

#include <ATen/ATen.h>
#include <torch/library.h>

#include "torch_npu/csrc/core/npu/NPUStream.h"

#include "aclrtlaunch_batch_norm_backward_elemt.h"
#include "aclrtlaunch_batch_norm_backward_reduce.h"
#include "aclrtlaunch_batch_norm_elemt.h"
#include "aclrtlaunch_batch_norm_gather_stats_with_counts.h"
#include "aclrtlaunch_batch_norm_stats.h"
#include "tiling.h"

namespace {

using at::Tensor;
using OptTensor = c10::optional<Tensor>;

uint32_t Cores() {
    // 910B2 has 48 vector cores; NPU_SYNCBN_BLOCK_DIM lowers it (e.g. on 910B4 or for tests).
    const char* env = std::getenv("NPU_SYNCBN_BLOCK_DIM");
    const int v = env ? std::atoi(env) : 0;
    return (v >= 1 && v <= int(BN_MAX_CORES)) ? uint32_t(v) : BN_MAX_CORES;
}

aclrtStream Stream() { return c10_npu::getCurrentNPUStream().stream(); }

uint32_t Dtype(const Tensor& x) {
    switch (x.scalar_type()) {
        case at::kFloat: return BN_FLOAT32;
        case at::kHalf: return BN_FLOAT16;
        case at::kBFloat16: return BN_BFLOAT16;
        default: TORCH_CHECK(false, "npu_syncbn kernels take float32, float16 or bfloat16 input, got ", x.scalar_type());
    }
}

// (N, C, inner) of an (N, C, *) tensor.
std::tuple<uint64_t, uint64_t, uint64_t> Shape(const Tensor& x) {
    TORCH_CHECK(x.dim() >= 2, "input must have shape (N, C, *), got ", x.sizes());
    const uint64_t n = x.size(0), c = x.size(1);
    return {n, c, n * c ? uint64_t(x.numel()) / (n * c) : 0};
}

Tensor F32(const Tensor& t) { return t.to(at::kFloat).contiguous(); }
void* Ptr(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

template <typename Tiling>
Tensor DeviceTiling(const Tiling& t, const Tensor& like) {
    Tensor host = at::empty({int64_t(sizeof(Tiling))}, at::TensorOptions().dtype(at::kByte));
    std::memcpy(host.data_ptr(), &t, sizeof(Tiling));
    return host.to(like.device());
}

Tensor Workspace(uint64_t bytes, const Tensor& like) {
    return at::empty({int64_t(bytes ? bytes : 32)}, like.options().dtype(at::kByte));
}

void CheckTiling(int status, const char* op) {
    TORCH_CHECK(status == BN_TILING_OK, "npu_syncbn::", op, ": ", BnTilingStatusText(status));
}

void CheckLaunch(uint32_t rc, const char* op) { TORCH_CHECK(rc == 0, "npu_syncbn::", op, ": kernel launch failed (", rc, ")"); }

std::tuple<Tensor, Tensor> BatchNormStats(const Tensor& input, double eps) {
    const Tensor x = input.contiguous();
    auto [n, c, l] = Shape(x);
    Tensor mean = at::zeros({int64_t(c)}, x.options().dtype(at::kFloat));
    Tensor invstd = at::full({int64_t(c)}, 1.0 / std::sqrt(eps), x.options().dtype(at::kFloat));
    if (x.numel() == 0) return {mean, invstd};
    BnStatsTiling t{};
    CheckTiling(BnRowTilingFor(BN_OP_STATS, n, c, l, Dtype(x), Cores(), BN_UB_BYTES, &t.rows), "batch_norm_stats");
    t.eps = float(eps);
    Tensor ws = Workspace(BnWorkspaceBytes(BN_OP_STATS, t.rows), x);
    Tensor tiling = DeviceTiling(t, x);
    CheckLaunch(ACLRT_LAUNCH_KERNEL(batch_norm_stats)(t.rows.blockDim, Stream(), Ptr(x), Ptr(mean), Ptr(invstd),
                                                      Ptr(ws), Ptr(tiling)),
                "batch_norm_stats");
    return {mean, invstd};
}

std::tuple<Tensor, Tensor> BatchNormGatherStatsWithCounts(const Tensor& input, const Tensor& mean,
                                                          const Tensor& invstd, const OptTensor& runningMean,
                                                          const OptTensor& runningVar, double momentum, double eps,
                                                          const Tensor& counts) {
    TORCH_CHECK(mean.dim() == 2 && invstd.sizes() == mean.sizes(), "mean and invstd must have shape (W, C)");
    const uint64_t world = mean.size(0), c = mean.size(1);
    TORCH_CHECK(uint64_t(counts.numel()) == world, "counts must have one entry per row of mean");
    const Tensor m = F32(mean), s = F32(invstd), cnt = F32(counts.reshape({-1}));
    const bool hasRm = runningMean.has_value() && runningMean->defined();
    const bool hasRv = runningVar.has_value() && runningVar->defined();
    Tensor rm = hasRm ? F32(*runningMean) : Tensor();
    Tensor rv = hasRv ? F32(*runningVar) : Tensor();
    Tensor meanOut = at::empty({int64_t(c)}, m.options());
    Tensor invstdOut = at::empty({int64_t(c)}, m.options());
    BnGatherTiling t{};
    CheckTiling(BnGatherTilingFor(c, world, Cores(), BN_UB_BYTES, hasRm, hasRv, float(momentum), float(eps), &t),
                "batch_norm_gather_stats_with_counts");
    Tensor tiling = DeviceTiling(t, m);
    Tensor ws = Workspace(0, m);
    CheckLaunch(ACLRT_LAUNCH_KERNEL(batch_norm_gather_stats_with_counts)(
                    t.blockDim, Stream(), Ptr(m), Ptr(s), Ptr(rm), Ptr(rv), Ptr(cnt), Ptr(meanOut), Ptr(invstdOut),
                    Ptr(ws), Ptr(tiling)),
                "batch_norm_gather_stats_with_counts");
    // In place, in the caller's dtype / layout (no-op copies when already float32 contiguous).
    if (hasRm && !rm.is_same(*runningMean)) runningMean->copy_(rm);
    if (hasRv && !rv.is_same(*runningVar)) runningVar->copy_(rv);
    (void)input;
    return {meanOut, invstdOut};
}

Tensor BatchNormElemt(const Tensor& input, const OptTensor& weight, const OptTensor& bias, const Tensor& mean,
                      const Tensor& invstd, double eps) {
    (void)eps;  // invstd already holds it, as in aten
    const Tensor x = input.contiguous();
    auto [n, c, l] = Shape(x);
    Tensor y = at::empty_like(x);
    if (x.numel() == 0) return y;
    const Tensor w = weight.has_value() && weight->defined() ? F32(*weight) : Tensor();
    const Tensor b = bias.has_value() && bias->defined() ? F32(*bias) : Tensor();
    const Tensor m = F32(mean), s = F32(invstd);
    BnElemtTiling t{};
    CheckTiling(BnRowTilingFor(BN_OP_ELEMT, n, c, l, Dtype(x), Cores(), BN_UB_BYTES, &t.rows), "batch_norm_elemt");
    t.hasWeight = w.defined();
    t.hasBias = b.defined();
    Tensor tiling = DeviceTiling(t, x);
    Tensor ws = Workspace(0, x);
    CheckLaunch(ACLRT_LAUNCH_KERNEL(batch_norm_elemt)(t.rows.blockDim, Stream(), Ptr(x), Ptr(w), Ptr(b), Ptr(m),
                                                      Ptr(s), Ptr(y), Ptr(ws), Ptr(tiling)),
                "batch_norm_elemt");
    return y;
}

std::tuple<Tensor, Tensor, Tensor, Tensor> BatchNormBackwardReduce(const Tensor& gradOut, const Tensor& input,
                                                                   const Tensor& mean, const Tensor& invstd,
                                                                   const OptTensor& weight, bool inputG, bool weightG,
                                                                   bool biasG) {
    // The project schema returns all four (C,) tensors, so all four are computed.
    (void)inputG, (void)weightG, (void)biasG;
    const Tensor x = input.contiguous(), dy = gradOut.contiguous();
    TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(), "grad_out must match input");
    auto [n, c, l] = Shape(x);
    auto f32 = x.options().dtype(at::kFloat);
    Tensor sumDy = at::zeros({int64_t(c)}, f32), sumDyXmu = at::zeros({int64_t(c)}, f32);
    Tensor gradWeight = at::zeros({int64_t(c)}, f32), gradBias = at::zeros({int64_t(c)}, f32);
    if (x.numel() > 0) {
        const Tensor m = F32(mean), s = F32(invstd);
        BnBackwardReduceTiling t{};
        CheckTiling(BnRowTilingFor(BN_OP_BACKWARD_REDUCE, n, c, l, Dtype(x), Cores(), BN_UB_BYTES, &t.rows),
                    "batch_norm_backward_reduce");
        t.outputMask = BN_OUT_SUMS | BN_OUT_GRAD_WEIGHT | BN_OUT_GRAD_BIAS;
        t.hasWeight = weight.has_value() && weight->defined();
        Tensor ws = Workspace(BnWorkspaceBytes(BN_OP_BACKWARD_REDUCE, t.rows), x);
        Tensor tiling = DeviceTiling(t, x);
        CheckLaunch(ACLRT_LAUNCH_KERNEL(batch_norm_backward_reduce)(t.rows.blockDim, Stream(), Ptr(dy), Ptr(x), Ptr(m),
                                                                    Ptr(s), Ptr(sumDy), Ptr(sumDyXmu), Ptr(gradWeight),
                                                                    Ptr(gradBias), Ptr(ws), Ptr(tiling)),
                    "batch_norm_backward_reduce");
    }
    if (weight.has_value() && weight->defined()) {
        gradWeight = gradWeight.to(weight->scalar_type());
        gradBias = gradBias.to(weight->scalar_type());
    }
    return {sumDy, sumDyXmu, gradWeight, gradBias};
}

Tensor BatchNormBackwardElemt(const Tensor& gradOut, const Tensor& input, const Tensor& mean, const Tensor& invstd,
                              const OptTensor& weight, const Tensor& sumDy, const Tensor& sumDyXmu,
                              const Tensor& count) {
    const Tensor x = input.contiguous(), dy = gradOut.contiguous();
    TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(), "grad_out must match input");
    auto [n, c, l] = Shape(x);
    Tensor dx = at::empty_like(x);
    if (x.numel() == 0) return dx;
    const Tensor m = F32(mean), s = F32(invstd), sdy = F32(sumDy), sxmu = F32(sumDyXmu);
    const Tensor w = weight.has_value() && weight->defined() ? F32(*weight) : Tensor();
    const Tensor cnt = F32(count.reshape({-1}));
    BnBackwardElemtTiling t{};
    CheckTiling(BnRowTilingFor(BN_OP_BACKWARD_ELEMT, n, c, l, Dtype(x), Cores(), BN_UB_BYTES, &t.rows),
                "batch_norm_backward_elemt");
    TORCH_CHECK(cnt.numel() >= 1, "count must have at least one element");
    t.hasWeight = w.defined();
    t.world = uint32_t(cnt.numel());
    Tensor tiling = DeviceTiling(t, x);
    Tensor ws = Workspace(0, x);
    CheckLaunch(ACLRT_LAUNCH_KERNEL(batch_norm_backward_elemt)(t.rows.blockDim, Stream(), Ptr(dy), Ptr(x), Ptr(m),
                                                               Ptr(s), Ptr(w), Ptr(sdy), Ptr(sxmu), Ptr(cnt), Ptr(dx),
                                                               Ptr(ws), Ptr(tiling)),
                "batch_norm_backward_elemt");
    return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(npu_syncbn, PrivateUse1, m) {
    m.impl("batch_norm_stats", &BatchNormStats);
    m.impl("batch_norm_gather_stats_with_counts", &BatchNormGatherStatsWithCounts);
    m.impl("batch_norm_elemt", &BatchNormElemt);
    m.impl("batch_norm_backward_reduce", &BatchNormBackwardReduce);
    m.impl("batch_norm_backward_elemt", &BatchNormBackwardElemt);
}

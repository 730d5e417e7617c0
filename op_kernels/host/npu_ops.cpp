/*
 * NPU launch glue: our AscendC kernels as the PrivateUse1 (Ascend) kernels of the
 * ops of namespace npu_syncbn_ascendc. npu_syncbn/ops/npu.py defines that
 * namespace with the schemas of npu_syncbn (ops/schema.py) before it loads this
 * library (libnpu_syncbn_npu.so), and routes each npu_syncbn call here, or, for
 * float64 input (these kernels take float32/float16/bfloat16), to torch-npu's
 * aclnn ops. Without this library every call takes the aclnn route.
 *
 * Each op: make the input's NPU current (stream and limits are per device),
 * check dtypes, make inputs contiguous, compute the tiling on the host
 * (tiling.h, the same code the CPU twin runs) for the device's own core count
 * and UB size, copy it to the device, and launch with ACLRT_LAUNCH_KERNEL on
 * torch-npu's current stream. Per-channel tensors are passed as float32.
 * Compile-checked without CANN by ci/npu_glue_check.sh.
 */
#include <dlfcn.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "acl/acl.h"
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

// What a launch may use on one device: read from the device once, then cached.
struct DeviceLimits {
    uint32_t cores;    // vector cores the blocks may occupy, 1..BN_MAX_CORES
    uint32_t ubBytes;  // UB per vector core the tiling may plan
};

// Bytes of UB left out of every plan, as the vendor's kernels do (96 B to 2 KiB).
constexpr int64_t kUbReserve = 1024;

// NPU_SYNCBN_BLOCK_DIM, or 0 when unset. It can only lower the core count: more
// blocks than physical cores would make a barrier kernel wait forever.
uint32_t BlockDimCap() {
    const char* env = std::getenv("NPU_SYNCBN_BLOCK_DIM");
    if (env == nullptr || *env == '\0') return 0;
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(env, &end, 10);
    TORCH_CHECK(errno == 0 && *end == '\0' && v >= 1, "NPU_SYNCBN_BLOCK_DIM must be a positive integer, got '", env,
                "'");
    return v > long(BN_MAX_CORES) ? BN_MAX_CORES : uint32_t(v);
}

// 910B1/B2 have 48 vector cores, 910B3/B4 40: the count comes from the device.
// The tiling takes at most BN_MAX_CORES; using fewer than a device has is safe.
uint32_t VectorCores(int32_t device) {
    int64_t n = 0;
    const aclError rc = aclGetDeviceCapability(uint32_t(device), ACL_DEVICE_INFO_VECTOR_CORE_NUM, &n);
    TORCH_CHECK(rc == ACL_SUCCESS && n > 0, "npu_syncbn: cannot read the vector-core count of NPU ", device,
                " (aclGetDeviceCapability returned ", rc, ", count ", n, ")");
    return n > int64_t(BN_MAX_CORES) ? BN_MAX_CORES : uint32_t(n);
}

// aclrtGetDeviceInfo is newer than some CANN runtimes torch-npu runs on (torch-npu
// itself looks it up at run time), so it is looked up, not linked; without it the
// 910B size BN_UB_BYTES is assumed. Plans stay within BN_UB_BYTES, the size the
// twin checks them against, whatever a device reports.
uint32_t UbBytes(int32_t device) {
    static const auto getInfo = reinterpret_cast<decltype(&aclrtGetDeviceInfo)>(dlsym(RTLD_DEFAULT, "aclrtGetDeviceInfo"));
    int64_t ub = 0;
    if (getInfo == nullptr || getInfo(uint32_t(device), ACL_DEV_ATTR_UBUF_PER_VECTOR_CORE, &ub) != ACL_SUCCESS || ub <= 0) {
        ub = BN_UB_BYTES;
    }
    return uint32_t((ub < int64_t(BN_UB_BYTES) ? ub : int64_t(BN_UB_BYTES)) - kUbReserve);
}

DeviceLimits Limits(const Tensor& onDevice) {
    static std::mutex mu;
    static std::map<int32_t, DeviceLimits> cache;
    const int32_t device = onDevice.device().index();
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(device);
    if (it == cache.end()) {
        DeviceLimits limits{VectorCores(device), UbBytes(device)};
        const uint32_t cap = BlockDimCap();
        if (cap != 0 && cap < limits.cores) limits.cores = cap;
        it = cache.emplace(device, limits).first;
    }
    return it->second;
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
    return {n, c, n > 0 && c > 0 ? uint64_t(x.numel()) / (n * c) : 0};
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
    const c10::DeviceGuard guard(input.device());
    const DeviceLimits lim = Limits(input);
    const Tensor x = input.contiguous();
    auto [n, c, l] = Shape(x);
    Tensor mean = at::zeros({int64_t(c)}, x.options().dtype(at::kFloat));
    Tensor invstd = at::full({int64_t(c)}, 1.0 / std::sqrt(eps), x.options().dtype(at::kFloat));
    if (x.numel() == 0) return {mean, invstd};
    BnStatsTiling t{};
    CheckTiling(BnRowTilingFor(BN_OP_STATS, n, c, l, Dtype(x), lim.cores, lim.ubBytes, &t.rows), "batch_norm_stats");
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
    const c10::DeviceGuard guard(mean.device());
    const DeviceLimits lim = Limits(mean);
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
    CheckTiling(BnGatherTilingFor(c, world, lim.cores, lim.ubBytes, hasRm, hasRv, float(momentum), float(eps), &t),
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
    const c10::DeviceGuard guard(input.device());
    const DeviceLimits lim = Limits(input);
    (void)eps;  // invstd already holds it, as in aten
    const Tensor x = input.contiguous();
    auto [n, c, l] = Shape(x);
    Tensor y = at::empty_like(x);
    if (x.numel() == 0) return y;
    const Tensor w = weight.has_value() && weight->defined() ? F32(*weight) : Tensor();
    const Tensor b = bias.has_value() && bias->defined() ? F32(*bias) : Tensor();
    const Tensor m = F32(mean), s = F32(invstd);
    BnElemtTiling t{};
    CheckTiling(BnRowTilingFor(BN_OP_ELEMT, n, c, l, Dtype(x), lim.cores, lim.ubBytes, &t.rows), "batch_norm_elemt");
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
    const c10::DeviceGuard guard(input.device());
    const DeviceLimits lim = Limits(input);
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
        CheckTiling(BnRowTilingFor(BN_OP_BACKWARD_REDUCE, n, c, l, Dtype(x), lim.cores, lim.ubBytes, &t.rows),
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
    const c10::DeviceGuard guard(input.device());
    const DeviceLimits lim = Limits(input);
    const Tensor x = input.contiguous(), dy = gradOut.contiguous();
    TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(), "grad_out must match input");
    auto [n, c, l] = Shape(x);
    Tensor dx = at::empty_like(x);
    if (x.numel() == 0) return dx;
    const Tensor m = F32(mean), s = F32(invstd), sdy = F32(sumDy), sxmu = F32(sumDyXmu);
    const Tensor w = weight.has_value() && weight->defined() ? F32(*weight) : Tensor();
    const Tensor cnt = F32(count.reshape({-1}));
    BnBackwardElemtTiling t{};
    CheckTiling(BnRowTilingFor(BN_OP_BACKWARD_ELEMT, n, c, l, Dtype(x), lim.cores, lim.ubBytes, &t.rows),
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

TORCH_LIBRARY_IMPL(npu_syncbn_ascendc, PrivateUse1, m) {
    m.impl("batch_norm_stats", &BatchNormStats);
    m.impl("batch_norm_gather_stats_with_counts", &BatchNormGatherStatsWithCounts);
    m.impl("batch_norm_elemt", &BatchNormElemt);
    m.impl("batch_norm_backward_reduce", &BatchNormBackwardReduce);
    m.impl("batch_norm_backward_elemt", &BatchNormBackwardElemt);
}

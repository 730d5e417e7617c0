/*
 * NPU launch glue: our AscendC kernels as the PrivateUse1 (Ascend) kernels of the
 * ops of namespace npu_syncbn_ascendc. npu_syncbn/ops/npu.py defines that
 * namespace with the schemas of npu_syncbn (ops/schema.py) before it loads this
 * library (libnpu_syncbn_npu.so), and routes each npu_syncbn call here, or, for
 * float64 input (these kernels take float32/float16/bfloat16), to torch-npu's
 * aclnn ops. Without this library every call takes the aclnn route.
 *
 * The ops' host side (checks, outputs, tiling, workspace, argument order) is
 * bn_ops.h, shared with the emulated device; this file is the ACL device
 * policy: the device's own core count and UB size, and ACLRT_LAUNCH_KERNEL on
 * torch-npu's current stream. Compile-checked without CANN by
 * ci/npu_glue_check.sh.
 */
#include <dlfcn.h>

#include <map>
#include <mutex>

#include <torch/library.h>

#include "acl/acl.h"
#include "torch_npu/csrc/core/npu/NPUFunctions.h"
#include "torch_npu/csrc/core/npu/NPUStream.h"
#include "torch_npu/csrc/framework/OpCommand.h"

#include "aclrtlaunch_batch_norm_backward_elemt.h"
#include "aclrtlaunch_batch_norm_backward_reduce.h"
#include "aclrtlaunch_batch_norm_elemt.h"
#include "aclrtlaunch_batch_norm_gather_stats_with_counts.h"
#include "aclrtlaunch_batch_norm_stats.h"
#include "aclrtlaunch_batch_norm_stats_clast.h"
#include "aclrtlaunch_batch_norm_elemt_clast.h"
#include "aclrtlaunch_batch_norm_backward_reduce_clast.h"
#include "aclrtlaunch_batch_norm_backward_elemt_clast.h"
#include "aclrtlaunch_batch_norm_sum_rows.h"
#include "aclrtlaunch_batch_norm_elemt_act.h"
#include "aclrtlaunch_batch_norm_elemt_act_clast.h"
#include "aclrtlaunch_batch_norm_backward_reduce_relu.h"
#include "aclrtlaunch_batch_norm_backward_reduce_relu_clast.h"
#include "bn_ops.h"

namespace {

using at::Tensor;
using bn_ops::DeviceLimits;
using bn_ops::GmArg;
using bn_ops::Kernel;

// 910B1/B2 have 48 vector cores, 910B3/B4 40: the count comes from the device.
int64_t VectorCores(int32_t device) {
    int64_t n = 0;
    const aclError rc = aclGetDeviceCapability(uint32_t(device), ACL_DEVICE_INFO_VECTOR_CORE_NUM, &n);
    TORCH_CHECK(rc == ACL_SUCCESS && n > 0, "npu_syncbn: cannot read the vector-core count of NPU ", device,
                " (aclGetDeviceCapability returned ", rc, ", count ", n, ")");
    return n;
}

// aclrtGetDeviceInfo is newer than some CANN runtimes torch-npu runs on (torch-npu
// itself looks it up at run time), so it is looked up, not linked, and neither
// it nor its attribute is taken from the headers: older CANN headers declare
// neither, and the glue must still build. Its public signature (acl/acl_rt.h:
// aclError aclrtGetDeviceInfo(uint32_t, aclrtDevAttr, int64_t*), the enum passed
// as an int) and attribute (ACL_DEV_ATTR_UBUF_PER_VECTOR_CORE = 204) are
// written here. 0 (the 910B size is then assumed) when it is missing or fails.
using AclGetDeviceInfo = aclError (*)(uint32_t deviceId, int32_t attr, int64_t* value);
constexpr int32_t kAclDevAttrUbPerVectorCore = 204;

int64_t UbBytes(int32_t device) {
    static const auto getInfo = reinterpret_cast<AclGetDeviceInfo>(dlsym(RTLD_DEFAULT, "aclrtGetDeviceInfo"));
    int64_t ub = 0;
    if (getInfo == nullptr || getInfo(uint32_t(device), kAclDevAttrUbPerVectorCore, &ub) != ACL_SUCCESS) ub = 0;
    return ub;
}

struct AclDevice {
    // Read from the device once, then cached per device.
    static DeviceLimits Limits(const Tensor& onDevice) {
        static std::mutex mu;
        static std::map<int32_t, DeviceLimits> cache;
        const int32_t device = onDevice.device().index();
        std::lock_guard<std::mutex> lock(mu);
        auto it = cache.find(device);
        if (it == cache.end()) it = cache.emplace(device, bn_ops::LimitsFrom(VectorCores(device), UbBytes(device))).first;
        return it->second;
    }

    // The launch goes through torch-npu's task queue, as its own aclnn ops do
    // (op-plugin's op_api_common.h: the current stream taken with stream(false),
    // the call handed to OpCommand::RunOpApiV2, torch_npu/csrc/framework/
    // OpCommand.h): queued behind the ops before it, in order, and the queue is
    // not drained (NPUStream::stream() with no argument empties it first,
    // NPUStream.h). The lambda holds the argument tensors until it runs.
    static void Launch(Kernel k, const char* op, uint32_t blockDim, const std::vector<GmArg>& args, uint64_t ubPlan) {
        (void)ubPlan;  // checked by the twin; the device has no such check
        (void)op;
        const aclrtStream stream = c10_npu::getCurrentNPUStream().stream(false);
        at_npu::native::OpCommand::RunOpApiV2(bn_ops::KernelName(k), [k, blockDim, stream, held = args]() -> int {
            // The queue's worker thread launches: it binds the stream's resources
            // first where torch-npu asks for it (as op-plugin's queued calls do).
            if (c10_npu::check_dequeue_need_use(stream)) c10_npu::UseStreamResInCurrentThread(stream);
            const uint32_t rc = LaunchOn(stream, k, blockDim, held);
            TORCH_CHECK(rc == 0, "npu_syncbn: kernel ", bn_ops::KernelName(k), " launch failed (", rc, ")");
            return 0;
        });
    }

    static uint32_t LaunchOn(aclrtStream stream, Kernel k, uint32_t blockDim, const std::vector<GmArg>& args) {
        std::vector<void*> p;
        for (const GmArg& a : args) p.push_back(bn_ops::Ptr(a.t));
        uint32_t rc = 1;
        switch (k) {
            case Kernel::Stats:
                rc = ACLRT_LAUNCH_KERNEL(batch_norm_stats)(blockDim, stream, p[0], p[1], p[2], p[3], p[4]);
                break;
            case Kernel::GatherStats:
                rc = ACLRT_LAUNCH_KERNEL(batch_norm_gather_stats_with_counts)(blockDim, stream, p[0], p[1], p[2], p[3],
                                                                              p[4], p[5], p[6], p[7], p[8]);
                break;
            case Kernel::Elemt:
                rc = ACLRT_LAUNCH_KERNEL(batch_norm_elemt)(blockDim, stream, p[0], p[1], p[2], p[3], p[4], p[5], p[6],
                                                           p[7]);
                break;
            case Kernel::BackwardReduce:
                rc = ACLRT_LAUNCH_KERNEL(batch_norm_backward_reduce)(blockDim, stream, p[0], p[1], p[2], p[3], p[4], p[5],
                                                                     p[6], p[7], p[8], p[9]);
                break;
            case Kernel::BackwardElemt:
                rc = ACLRT_LAUNCH_KERNEL(batch_norm_backward_elemt)(blockDim, stream, p[0], p[1], p[2], p[3], p[4], p[5],
                                                                    p[6], p[7], p[8], p[9], p[10]);
                break;
            case Kernel::StatsClast:
                rc = ACLRT_LAUNCH_KERNEL(batch_norm_stats_clast)(blockDim, stream, p[0], p[1], p[2], p[3], p[4]);
                break;
            case Kernel::ElemtClast:
                rc = ACLRT_LAUNCH_KERNEL(batch_norm_elemt_clast)(blockDim, stream, p[0], p[1], p[2], p[3], p[4], p[5],
                                                                 p[6], p[7]);
                break;
            case Kernel::BackwardReduceClast:
                rc = ACLRT_LAUNCH_KERNEL(batch_norm_backward_reduce_clast)(blockDim, stream, p[0], p[1], p[2], p[3],
                                                                           p[4], p[5], p[6]);
                break;
            case Kernel::BackwardElemtClast:
                rc = ACLRT_LAUNCH_KERNEL(batch_norm_backward_elemt_clast)(blockDim, stream, p[0], p[1], p[2], p[3],
                                                                          p[4], p[5], p[6], p[7], p[8], p[9], p[10]);
                break;
            case Kernel::SumRows:
                rc = ACLRT_LAUNCH_KERNEL(batch_norm_sum_rows)(blockDim, stream, p[0], p[1], p[2], p[3], p[4], p[5],
                                                              p[6], p[7], p[8]);
                break;
            case Kernel::ElemtAct:
                rc = ACLRT_LAUNCH_KERNEL(batch_norm_elemt_act)(blockDim, stream, p[0], p[1], p[2], p[3], p[4], p[5],
                                                               p[6], p[7], p[8]);
                break;
            case Kernel::ElemtActClast:
                rc = ACLRT_LAUNCH_KERNEL(batch_norm_elemt_act_clast)(blockDim, stream, p[0], p[1], p[2], p[3], p[4],
                                                                     p[5], p[6], p[7], p[8]);
                break;
            case Kernel::BackwardReduceRelu:
                rc = ACLRT_LAUNCH_KERNEL(batch_norm_backward_reduce_relu)(blockDim, stream, p[0], p[1], p[2], p[3],
                                                                          p[4], p[5], p[6], p[7], p[8], p[9], p[10],
                                                                          p[11]);
                break;
            case Kernel::BackwardReduceReluClast:
                rc = ACLRT_LAUNCH_KERNEL(batch_norm_backward_reduce_relu_clast)(blockDim, stream, p[0], p[1], p[2],
                                                                                p[3], p[4], p[5], p[6], p[7], p[8]);
                break;
        }
        return rc;
    }
};

}  // namespace

BN_OPS_REGISTER(npu_syncbn_ascendc, AclDevice)

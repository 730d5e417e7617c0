/*
 * Our AscendC kernels as the PrivateUse1 kernels of namespace
 * npu_syncbn_ascendc on the emulated "npu" device: the host side is
 * op_kernels/host/bn_ops.h, the very code npu_ops.cpp runs on an NPU (checks,
 * tiling, workspace, argument order); this file is the twin device policy.
 * The kernel sources run on the CPU twin's emulated vector cores over the npu
 * tensors' memory, with the core count and UB size of the twin's SoC
 * (NPU_SYNCBN_SOC, default Ascend910B2). A kernel that breaks an AscendC rule
 * raises an error naming the op, the kernel, the core and the rule.
 */
#include <atomic>
#include <mutex>

#include <torch/library.h>

#include "bn_ops.h"
#include "kernel_entries.h"
#include "kernel_log.h"
#include "twin_runtime.h"

std::mutex gLogMutex;
std::vector<KernelLogEntry> gLog;
// Off until the first TakeKernelLog: a training run that never asks keeps no log.
std::atomic<bool> gLogOn{false};

void SetKernelAutoSync(bool on) { twin::SetAutoSync(on); }

std::vector<KernelLogEntry> TakeKernelLog() {
    gLogOn = true;
    std::lock_guard<std::mutex> lock(gLogMutex);
    std::vector<KernelLogEntry> out;
    out.swap(gLog);
    return out;
}

namespace {

using at::Tensor;
using bn_ops::DeviceLimits;
using bn_ops::GmArg;
using bn_ops::Kernel;

struct TwinDevice {
    static DeviceLimits Limits(const Tensor&) {
        const BnSocInfo& soc = twin::CurrentSoc();
        return bn_ops::LimitsFrom(soc.vectorCores, soc.ubBytes);
    }

    static void Launch(Kernel k, const char* op, uint32_t blockDim, const std::vector<GmArg>& args, uint64_t ubPlan) {
        std::vector<twin::GmArg> gm;
        std::vector<uint8_t*> p;
        for (const GmArg& a : args) {
            uint8_t* ptr = static_cast<uint8_t*>(bn_ops::Ptr(a.t));
            gm.push_back({a.name, ptr, a.t.defined() ? uint64_t(a.t.numel()) * a.t.element_size() : 0});
            p.push_back(ptr);
        }
        const std::string err = twin::Launch(
            bn_ops::KernelName(k), blockDim, gm,
            [&] {
                switch (k) {
                    case Kernel::Stats: batch_norm_stats(p[0], p[1], p[2], p[3], p[4]); break;
                    case Kernel::GatherStats:
                        batch_norm_gather_stats_with_counts(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]);
                        break;
                    case Kernel::Elemt: batch_norm_elemt(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]); break;
                    case Kernel::BackwardReduce:
                        batch_norm_backward_reduce(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9]);
                        break;
                    case Kernel::BackwardElemt:
                        batch_norm_backward_elemt(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10]);
                        break;
                    case Kernel::StatsClast: batch_norm_stats_clast(p[0], p[1], p[2], p[3], p[4]); break;
                    case Kernel::ElemtClast:
                        batch_norm_elemt_clast(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]);
                        break;
                    case Kernel::BackwardReduceClast:
                        batch_norm_backward_reduce_clast(p[0], p[1], p[2], p[3], p[4], p[5], p[6]);
                        break;
                    case Kernel::BackwardElemtClast:
                        batch_norm_backward_elemt_clast(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9],
                                                        p[10]);
                        break;
                    case Kernel::SumRows:
                        batch_norm_sum_rows(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]);
                        break;
                    case Kernel::ElemtAct:
                        batch_norm_elemt_act(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]);
                        break;
                    case Kernel::ElemtActClast:
                        batch_norm_elemt_act_clast(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]);
                        break;
                    case Kernel::BackwardReduceRelu:
                        batch_norm_backward_reduce_relu(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9],
                                                        p[10], p[11]);
                        break;
                    case Kernel::BackwardReduceReluClast:
                        batch_norm_backward_reduce_relu_clast(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]);
                        break;
                }
            },
            ubPlan);
        TORCH_CHECK(err.empty(), "npu_syncbn::", op, " on the emulated npu: ", err);
        if (!gLogOn) return;
        std::lock_guard<std::mutex> lock(gLogMutex);
        gLog.push_back({bn_ops::KernelName(k), blockDim, twin::LastTraffic()});
    }
};

}  // namespace

BN_OPS_REGISTER(npu_syncbn_ascendc, TwinDevice)

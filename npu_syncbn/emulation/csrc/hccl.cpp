/*
 * Process-group backend "hccl" of the emulated npu device: a c10d::Backend
 * (what torch-npu's ProcessGroupHCCL is) that hands gloo CPU views of the npu
 * tensors' memory, so results land in the npu tensors with no copy and no host
 * transfer (on an NPU, HCCL reads device memory itself). Its work and futures
 * answer with the npu tensors, as HCCL's do.
 *
 * Why C++ rather than a Python dist.ProcessGroup subclass: torch's C++ paths
 * (functional collectives under torch.compile, c10d ops) ask the group for
 * its backend of the tensors' device; a Python group has none, so they failed
 * ("No backend type associated with device type npu"), and torch kept the
 * group's name in its backends ("ProcessGroup name not set" on destroy).
 */
#include <torch/extension.h>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#include <torch/csrc/distributed/c10d/reducer_timer.hpp>

#include "emulated_device.h"

namespace {

using at::Tensor;
using c10::intrusive_ptr;
using c10d::Work;

Tensor Host(const Tensor& t) {
    TORCH_CHECK(t.device().type() == c10::DeviceType::PrivateUse1,
                "hccl (emulated): collectives take npu tensors only, as HCCL does; got a tensor on ", t.device(),
                " (move it with .npu() or use a gloo group for CPU tensors)");
    return npu_syncbn_emulation::CpuAlias(t);
}

std::vector<Tensor> Host(const std::vector<Tensor>& ts) {
    std::vector<Tensor> out;
    out.reserve(ts.size());
    for (const Tensor& t : ts) out.push_back(Host(t));
    return out;
}

std::vector<std::vector<Tensor>> Host(const std::vector<std::vector<Tensor>>& ts) {
    std::vector<std::vector<Tensor>> out;
    out.reserve(ts.size());
    for (const auto& v : ts) out.push_back(Host(v));
    return out;
}

// gloo's work on the CPU views, answering with the npu tensors.
class NpuWork final : public Work {
   public:
    NpuWork(intrusive_ptr<Work> inner, std::vector<Tensor> results)
        : inner_(std::move(inner)), results_(std::move(results)) {}

    bool isCompleted() override { return inner_->isCompleted(); }
    std::exception_ptr exception() const override { return inner_->exception(); }
    std::vector<Tensor> result() override {
        inner_->wait();
        return results_;
    }
    bool wait(std::chrono::milliseconds timeout) override { return inner_->wait(timeout); }
    void synchronize() override {}  // kernels are synchronous: nothing on a stream to wait for
    void abort() override { inner_->abort(); }

    intrusive_ptr<c10::ivalue::Future> getFuture() override {
        std::vector<c10::Device> devices;
        for (const Tensor& t : results_) {
            if (std::find(devices.begin(), devices.end(), t.device()) == devices.end()) devices.push_back(t.device());
        }
        auto future = c10::make_intrusive<c10::ivalue::Future>(c10::ListType::create(c10::TensorType::get()), devices);
        inner_->getFuture()->addCallback([future, results = results_](c10::ivalue::Future& done) {
            if (done.hasError()) {
                future->setError(done.exception_ptr());
            } else {
                future->markCompleted(c10::IValue(results));
            }
        });
        return future;
    }

   private:
    intrusive_ptr<Work> inner_;
    std::vector<Tensor> results_;
};

std::vector<Tensor> Flat(const std::vector<std::vector<Tensor>>& ts) {
    std::vector<Tensor> out;
    for (const auto& v : ts) out.insert(out.end(), v.begin(), v.end());
    return out;
}

class EmulatedHccl final : public c10d::Backend {
   public:
    EmulatedHccl(intrusive_ptr<c10d::Backend> gloo, int rank, int size) : Backend(rank, size), gloo_(std::move(gloo)) {}

    const std::string getBackendName() const override { return "hccl"; }

    intrusive_ptr<Work> broadcast(std::vector<Tensor>& ts, const c10d::BroadcastOptions& o) override {
        return OnViews(ts, [&](std::vector<Tensor>& h) { return gloo_->broadcast(h, o); });
    }
    intrusive_ptr<Work> allreduce(std::vector<Tensor>& ts, const c10d::AllreduceOptions& o) override {
        return OnViews(ts, [&](std::vector<Tensor>& h) { return gloo_->allreduce(h, o); });
    }
    intrusive_ptr<Work> allreduce_coalesced(std::vector<Tensor>& ts, const c10d::AllreduceCoalescedOptions& o) override {
        return OnViews(ts, [&](std::vector<Tensor>& h) { return gloo_->allreduce_coalesced(h, o); });
    }
    intrusive_ptr<Work> reduce(std::vector<Tensor>& ts, const c10d::ReduceOptions& o) override {
        return OnViews(ts, [&](std::vector<Tensor>& h) { return gloo_->reduce(h, o); });
    }
    intrusive_ptr<Work> allgather(std::vector<std::vector<Tensor>>& outs, std::vector<Tensor>& ins,
                                  const c10d::AllgatherOptions& o) override {
        auto ho = Host(outs);
        auto hi = Host(ins);
        return Wrap(gloo_->allgather(ho, hi, o), Flat(outs));
    }
    // gloo splits a flat output into one chunk per rank; HCCL takes any shape.
    intrusive_ptr<Work> _allgather_base(Tensor& out, Tensor& in, const c10d::AllgatherOptions& o) override {
        Tensor ho = Host(out).view({-1});
        Tensor hi = Host(in);
        return Wrap(gloo_->_allgather_base(ho, hi, o), {out});
    }
    intrusive_ptr<Work> allgather_into_tensor_coalesced(std::vector<Tensor>& outs, std::vector<Tensor>& ins,
                                                        const c10d::AllgatherOptions& o) override {
        std::vector<Tensor> ho;
        for (const Tensor& t : outs) ho.push_back(Host(t).view({-1}));
        auto hi = Host(ins);
        return Wrap(gloo_->allgather_into_tensor_coalesced(ho, hi, o), outs);
    }
    intrusive_ptr<Work> gather(std::vector<std::vector<Tensor>>& outs, std::vector<Tensor>& ins,
                               const c10d::GatherOptions& o) override {
        auto ho = Host(outs);
        auto hi = Host(ins);
        return Wrap(gloo_->gather(ho, hi, o), Flat(outs));
    }
    intrusive_ptr<Work> scatter(std::vector<Tensor>& outs, std::vector<std::vector<Tensor>>& ins,
                                const c10d::ScatterOptions& o) override {
        auto ho = Host(outs);
        auto hi = Host(ins);
        return Wrap(gloo_->scatter(ho, hi, o), outs);
    }
    intrusive_ptr<Work> reduce_scatter(std::vector<Tensor>& outs, std::vector<std::vector<Tensor>>& ins,
                                       const c10d::ReduceScatterOptions& o) override {
        auto ho = Host(outs);
        auto hi = Host(ins);
        return Wrap(gloo_->reduce_scatter(ho, hi, o), outs);
    }
    intrusive_ptr<Work> _reduce_scatter_base(Tensor& out, Tensor& in, const c10d::ReduceScatterOptions& o) override {
        Tensor ho = Host(out);
        Tensor hi = Host(in).view({-1});
        return Wrap(gloo_->_reduce_scatter_base(ho, hi, o), {out});
    }
    intrusive_ptr<Work> alltoall_base(Tensor& out, Tensor& in, std::vector<int64_t>& outSplits,
                                      std::vector<int64_t>& inSplits, const c10d::AllToAllOptions& o) override {
        Tensor ho = Host(out);
        Tensor hi = Host(in);
        return Wrap(gloo_->alltoall_base(ho, hi, outSplits, inSplits, o), {out});
    }
    intrusive_ptr<Work> send(std::vector<Tensor>& ts, int dst, int tag) override {
        return OnViews(ts, [&](std::vector<Tensor>& h) { return gloo_->send(h, dst, tag); });
    }
    intrusive_ptr<Work> recv(std::vector<Tensor>& ts, int src, int tag) override {
        return OnViews(ts, [&](std::vector<Tensor>& h) { return gloo_->recv(h, src, tag); });
    }
    intrusive_ptr<Work> recvAnysource(std::vector<Tensor>& ts, int tag) override {
        return OnViews(ts, [&](std::vector<Tensor>& h) { return gloo_->recvAnysource(h, tag); });
    }
    intrusive_ptr<Work> barrier(const c10d::BarrierOptions& o) override { return gloo_->barrier(o); }

   private:
    // A collective of one tensor list: gloo runs it on the lists' CPU views.
    template <class Call>
    static intrusive_ptr<Work> OnViews(std::vector<Tensor>& ts, Call call) {
        auto h = Host(ts);
        return Wrap(call(h), ts);
    }

    static intrusive_ptr<Work> Wrap(intrusive_ptr<Work> inner, std::vector<Tensor> results) {
        return c10::make_intrusive<NpuWork>(std::move(inner), std::move(results));
    }

    intrusive_ptr<c10d::Backend> gloo_;
};

}  // namespace

namespace npu_syncbn_emulation {

void BindHccl(pybind11::module& m) {
    m.def(
        "hccl_backend",
        [](const intrusive_ptr<c10d::Backend>& gloo, int rank, int size) -> intrusive_ptr<c10d::Backend> {
            return c10::make_intrusive<EmulatedHccl>(gloo, rank, size);
        },
        "The emulated 'hccl' backend of npu tensors over the given gloo backend");
}

}  // namespace npu_syncbn_emulation

namespace c10d {
namespace {

// DDP's per-iteration time stats for npu tensors. Every kernel and collective
// of the emulated device finishes before its call returns, so host clock
// times are the device's. Without a timer for the device type DDP warns on
// every rank that it collects time stats for CPU and CUDA only.
class EmulatedNpuTimer : public Timer {
 public:
    explicit EmulatedNpuTimer(c10::Device /*device*/) {}

    std::optional<int64_t> measureDifference(Event start, Event end) override {
        const int64_t from = getTimeRef(start), to = getTimeRef(end);
        if (from == kUnsetTime || to == kUnsetTime || to < from) return std::nullopt;
        return to - from;
    }
};

}  // namespace

C10_REGISTER_TYPED_CLASS(TimerRegistry, c10::kPrivateUse1, EmulatedNpuTimer);

}  // namespace c10d

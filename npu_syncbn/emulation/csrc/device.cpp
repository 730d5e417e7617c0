/*
 * The emulated Ascend device: torch's PrivateUse1 backend (renamed "npu" from
 * Python) with host memory behind it, so that every line of the NPU code path
 * runs on machines without an NPU. Written from PyTorch's public extension
 * points (c10::Allocator, DeviceGuardImplInterface, PrivateUse1HooksInterface,
 * TORCH_LIBRARY_IMPL and a boxed backend fallback).
 *
 *   memory      64-byte aligned host blocks, DataPtr device npu:<index>
 *   aten ops    the memory-layout ops (empty, views, resize_, set_, copies)
 *               natively; every other op by the fallback: CPU aliases of the
 *               npu tensors (same memory, no copy), the CPU kernel, and the
 *               results re-labelled as npu (views keep their npu storage)
 *   transfers   device->host copies and host reads of device data (.item(),
 *               .cpu(), printing, bool()) are counted: host_transfers()
 *
 * Why C++ rather than torch's Python backend support: that route has no
 * allocator, so npu tensors would be storage-less wrappers and views, in-place
 * updates and DDP's bucket views would each need their own Python kernel.
 */
#include <torch/extension.h>

#include "kernel_log.h"

#include <ATen/EmptyTensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <ATen/native/Resize.h>
#include <ATen/ops/as_strided_native.h>
#include <ATen/ops/set_native.h>
#include <ATen/ops/view_native.h>
#include <ATen/ops/_reshape_alias_native.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/library.h>

#include "emulated_device.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace {

using at::Tensor;
constexpr auto kNpu = c10::DeviceType::PrivateUse1;

std::atomic<int64_t> gTransfers{0};
std::atomic<int64_t> gDeviceCopyBytes{0};  // npu -> npu copies (.contiguous(), clone, copy_): layout copies show here
c10::DeviceIndex gDeviceCount = 8;
thread_local c10::DeviceIndex tDevice = 0;

void CountTransfer() { ++gTransfers; }

void CheckIndex(c10::DeviceIndex i) {
    TORCH_CHECK(i >= 0 && i < gDeviceCount, "emulated npu: device index ", int(i), " outside 0..",
                int(gDeviceCount) - 1, " (NPU_SYNCBN_EMULATE_DEVICES sets the count)");
}

// ---------------------------------------------------------------- memory
struct HostAllocator final : c10::Allocator {
    static void Delete(void* p) { std::free(p); }
    c10::DataPtr allocate(size_t n) override {
        void* p = n ? std::aligned_alloc(64, (n + 63) / 64 * 64) : nullptr;
        TORCH_CHECK(n == 0 || p != nullptr, "emulated npu: out of host memory allocating ", n, " bytes");
        return {p, p, &Delete, c10::Device(kNpu, tDevice)};
    }
    c10::DeleterFnPtr raw_deleter() const override { return &Delete; }
    void copy_data(void* dst, const void* src, std::size_t n) const override { std::memcpy(dst, src, n); }
};

HostAllocator gAllocator;
// torch allocates "npu" storages of its own too (deepcopy, torch.load, UntypedStorage(n, device="npu")).
REGISTER_ALLOCATOR(kNpu, &gAllocator);

// Sets the thread's current device for the scope (allocations take their device from it).
struct DeviceScope {
    c10::DeviceIndex saved;
    explicit DeviceScope(std::optional<c10::Device> d) : saved(tDevice) {
        if (d && d->has_index()) {
            CheckIndex(d->index());
            tDevice = d->index();
        }
    }
    ~DeviceScope() { tDevice = saved; }
};

// ---------------------------------------------------------------- device guard and hooks
struct GuardImpl final : c10::impl::DeviceGuardImplInterface {
    c10::DeviceType type() const override { return kNpu; }
    c10::Device exchangeDevice(c10::Device d) const override {
        const c10::Device old = getDevice();
        setDevice(d);
        return old;
    }
    c10::Device getDevice() const override { return {kNpu, tDevice}; }
    void setDevice(c10::Device d) const override {
        CheckIndex(d.index());
        tDevice = d.index();
    }
    void uncheckedSetDevice(c10::Device d) const noexcept override { tDevice = d.index(); }
    c10::Stream getStream(c10::Device d) const noexcept override { return c10::Stream(c10::Stream::DEFAULT, d); }
    c10::Stream getDefaultStream(c10::Device d) const override { return c10::Stream(c10::Stream::DEFAULT, d); }
    c10::Stream exchangeStream(c10::Stream s) const noexcept override {
        return c10::Stream(c10::Stream::DEFAULT, s.device());
    }
    c10::DeviceIndex deviceCount() const noexcept override { return gDeviceCount; }
    // One in-order stream per device and synchronous kernels: events are always complete.
    void record(void**, const c10::Stream&, const c10::DeviceIndex, const c10::EventFlag) const override {}
    void block(void*, const c10::Stream&) const override {}
    bool queryEvent(void*) const override { return true; }
    void destroyEvent(void*, const c10::DeviceIndex) const noexcept override {}
    bool queryStream(const c10::Stream&) const override { return true; }
    void synchronizeStream(const c10::Stream&) const override {}
    void synchronizeDevice(const c10::DeviceIndex) const override {}
};

C10_REGISTER_GUARD_IMPL(PrivateUse1, GuardImpl);

struct Hooks final : at::PrivateUse1HooksInterface {
    bool isBuilt() const override { return true; }
    bool isAvailable() const override { return true; }
    bool hasPrimaryContext(c10::DeviceIndex) const override { return true; }
    c10::DeviceIndex deviceCount() const override { return gDeviceCount; }
    void setCurrentDevice(c10::DeviceIndex d) const override {
        CheckIndex(d);
        tDevice = d;
    }
    c10::DeviceIndex getCurrentDevice() const override { return tDevice; }
    c10::DeviceIndex exchangeDevice(c10::DeviceIndex d) const override {
        const c10::DeviceIndex old = tDevice;
        setCurrentDevice(d);
        return old;
    }
    c10::DeviceIndex maybeExchangeDevice(c10::DeviceIndex d) const override { return exchangeDevice(d); }
    // Random ops run as CPU kernels (the fallback), so they draw from the CPU generator.
    const at::Generator& getDefaultGenerator(c10::DeviceIndex) const override {
        return at::detail::getDefaultCPUGenerator();
    }
    at::Device getDeviceFromPtr(void*) const override { return {kNpu, tDevice}; }
    c10::Allocator* getPinnedMemoryAllocator() const override { return at::getCPUAllocator(); }
    void resizePrivateUse1Bytes(const c10::Storage& storage, size_t n) const override {
        at::native::resize_bytes_cpu(storage.unsafeGetStorageImpl(), n);
    }
};

// ---------------------------------------------------------------- npu <-> CPU views of the same memory
void DeleteStorage(void* ctx) { delete static_cast<c10::Storage*>(ctx); }

// A CPU tensor over the npu tensor's memory: same bytes, sizes, strides, offset;
// it keeps the npu storage alive (a collective may still be writing to it).
// Resizable through the CPU allocator, so that a CPU out= kernel may grow it;
// the fallback then moves the result back into npu memory.
Tensor CpuAlias(const Tensor& t) {
    if (!t.defined() || t.device().type() != kNpu) return t;
    const c10::Storage& s = t.storage();
    c10::DataPtr ptr(s.mutable_data(), new c10::Storage(s), &DeleteStorage, c10::Device(c10::kCPU));
    c10::Storage cpu(c10::Storage::use_byte_size_t(), s.nbytes(), std::move(ptr), at::getCPUAllocator(),
                     /*resizable=*/true);
    Tensor alias = at::empty({0}, t.options().device(c10::kCPU));
    alias.set_(cpu, t.storage_offset(), t.sizes(), t.strides());
    return alias;
}

// An npu tensor over `storage` with r's dtype, sizes, strides and offset.
Tensor OnStorage(const c10::Storage& storage, const Tensor& r) {
    Tensor out = at::detail::make_tensor<c10::TensorImpl>(c10::Storage(storage), c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                                         r.dtype());
    out.unsafeGetTensorImpl()->set_sizes_and_strides(r.sizes(), r.strides(), r.storage_offset());
    return out;
}

// The CPU result r as an npu tensor over the same memory; the npu storage keeps r's storage alive.
Tensor AdoptCpu(const Tensor& r, c10::DeviceIndex device) {
    c10::Storage cpu = r.storage();
    void* data = cpu.mutable_data();
    c10::DataPtr ptr(data, new c10::Storage(cpu), &DeleteStorage, c10::Device(kNpu, device));
    c10::Storage npu(c10::Storage::use_byte_size_t(), cpu.nbytes(), std::move(ptr), &gAllocator, /*resizable=*/true);
    return OnStorage(npu, r);
}

// ---------------------------------------------------------------- native layout ops
Tensor Empty(c10::IntArrayRef size, std::optional<c10::ScalarType> dtype, std::optional<c10::Layout>,
             std::optional<c10::Device> device, std::optional<bool>, std::optional<c10::MemoryFormat> format) {
    DeviceScope scope(device);
    return at::detail::empty_generic(size, &gAllocator, c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                     c10::dtype_or_default(dtype), format);
}

Tensor EmptyStrided(c10::IntArrayRef size, c10::IntArrayRef stride, std::optional<c10::ScalarType> dtype,
                    std::optional<c10::Layout>, std::optional<c10::Device> device, std::optional<bool>) {
    DeviceScope scope(device);
    return at::detail::empty_strided_generic(size, stride, &gAllocator,
                                             c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                             c10::dtype_or_default(dtype));
}

const Tensor& Resize(const Tensor& self, c10::IntArrayRef size, std::optional<c10::MemoryFormat> format) {
    DeviceScope scope(self.device());
    at::native::resize_impl_cpu_(self.unsafeGetTensorImpl(), size, /*stride=*/std::nullopt, /*resize_storage=*/true);
    if (format) self.unsafeGetTensorImpl()->empty_tensor_restride(*format);
    return self;
}

// Tensor::copy_ lands here whenever one side is an npu tensor.
Tensor CopyFrom(const Tensor& self, const Tensor& dst, bool /*non_blocking*/) {
    if (self.device().type() == kNpu && dst.device().type() == c10::kCPU) CountTransfer();
    if (self.device().type() == kNpu && dst.device().type() == kNpu) gDeviceCopyBytes += dst.numel() * dst.element_size();
    CpuAlias(dst).copy_(CpuAlias(self));
    return dst;
}

Tensor CopyFromAndResize(const Tensor& self, const Tensor& dst) {
    if (dst.device().type() == kNpu) {
        Resize(dst, self.sizes(), std::nullopt);
    } else {
        dst.resize_(self.sizes());
    }
    return CopyFrom(self, dst, false);
}

// .item(), bool(), printing: a host read of device data.
c10::Scalar LocalScalarDense(const Tensor& self) {
    CountTransfer();
    return CpuAlias(self).item();
}

// Convolution picks its backend by device type and sends every other device to
// these two "overrideable" ops (errors by default), never to the fallback.
Tensor Convolution(const Tensor& input, const Tensor& weight, const std::optional<Tensor>& bias, c10::IntArrayRef stride,
                   c10::IntArrayRef padding, c10::IntArrayRef dilation, bool transposed, c10::IntArrayRef outputPadding,
                   int64_t groups) {
    const std::optional<Tensor> b = bias && bias->defined() ? std::optional<Tensor>(CpuAlias(*bias)) : std::nullopt;
    const Tensor out = at::convolution(CpuAlias(input), CpuAlias(weight), b, stride, padding, dilation, transposed,
                                       outputPadding, groups);
    return AdoptCpu(out, input.device().index());
}

std::tuple<Tensor, Tensor, Tensor> ConvolutionBackward(const Tensor& gradOut, const Tensor& input, const Tensor& weight,
                                                       c10::IntArrayRef stride, c10::IntArrayRef padding,
                                                       c10::IntArrayRef dilation, bool transposed,
                                                       c10::IntArrayRef outputPadding, int64_t groups,
                                                       std::array<bool, 3> mask) {
    const int64_t outChannels = transposed ? weight.size(1) * groups : weight.size(0);
    auto [gi, gw, gb] = at::convolution_backward(CpuAlias(gradOut), CpuAlias(input), CpuAlias(weight),
                                                 c10::IntArrayRef({outChannels}), stride, padding, dilation, transposed,
                                                 outputPadding, groups, mask);
    const c10::DeviceIndex d = input.device().index();
    auto adopt = [d](const Tensor& t) { return t.defined() ? AdoptCpu(t, d) : t; };
    return {adopt(gi), adopt(gw), adopt(gb)};
}

// ---------------------------------------------------------------- the fallback
struct Aliased {
    Tensor npu, cpu;
    c10::StorageImpl* cpuStorage;
    const void* data;  // where the alias pointed before the kernel ran
};

c10::IValue ToCpu(const c10::IValue& v, std::vector<Aliased>& seen, bool& npuSeen) {
    if (v.isTensor()) {
        const Tensor& t = v.toTensor();
        if (!t.defined() || t.device().type() != kNpu) return v;
        npuSeen = true;
        Tensor a = CpuAlias(t);
        seen.push_back({t, a, a.storage().unsafeGetStorageImpl(), a.storage().data()});
        return a;
    }
    if (v.isTensorList()) {
        c10::List<Tensor> out;
        for (const Tensor& t : v.toTensorList()) out.push_back(ToCpu(t, seen, npuSeen).toTensor());
        return out;
    }
    if (v.isList()) {  // Tensor?[] and other generic lists
        c10::impl::GenericList out(v.toList().elementType());
        for (const c10::IValue& e : v.toList()) out.push_back(ToCpu(e, seen, npuSeen));
        return out;
    }
    return v;
}

c10::IValue ToNpu(const c10::IValue& v, const std::vector<Aliased>& seen, c10::DeviceIndex device) {
    if (v.isTensor()) {
        const Tensor& r = v.toTensor();
        if (!r.defined() || r.device().type() != c10::kCPU) return v;
        for (const Aliased& a : seen) {
            if (r.is_same(a.cpu)) return a.npu;                       // in-place: the op returned its argument
        }
        for (const Aliased& a : seen) {
            if (r.storage().unsafeGetStorageImpl() == a.cpuStorage) return OnStorage(a.npu.storage(), r);  // a view
        }
        return AdoptCpu(r, tDevice);
    }
    if (v.isTensorList()) {
        c10::List<Tensor> out;
        for (const Tensor& t : v.toTensorList()) out.push_back(ToNpu(t, seen, device).toTensor());
        return out;
    }
    return v;
}

void Fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
    const auto& schema = op.schema();
    const size_t nargs = schema.arguments().size();
    std::vector<Aliased> seen;
    bool npuInput = false;
    std::optional<bool> npuTarget;  // from a Device argument, when the op has one
    std::optional<c10::DeviceIndex> argDevice;
    for (size_t i = stack->size() - nargs; i < stack->size(); ++i) {
        c10::IValue& v = (*stack)[i];
        if (v.isDevice()) {
            const c10::Device d = v.toDevice();
            npuTarget = d.type() == kNpu;
            if (d.type() == kNpu) {
                if (d.has_index()) argDevice = d.index();
                v = c10::IValue(c10::Device(c10::kCPU));
            }
        } else {
            v = ToCpu(v, seen, npuInput);
        }
    }
    const c10::DeviceIndex device = argDevice ? *argDevice : (!seen.empty() ? seen.front().npu.device().index() : tDevice);
    op.callBoxed(stack);
    // An out= argument the CPU kernel resized now has CPU memory of its own: move it back.
    for (const Aliased& a : seen) {
        if (a.cpu.storage().data() != a.data || a.cpu.sizes() != a.npu.sizes() || a.cpu.strides() != a.npu.strides()) {
            Resize(a.npu, a.cpu.sizes(), std::nullopt);
            a.npu.unsafeGetTensorImpl()->set_sizes_and_strides(a.cpu.sizes(), a.cpu.strides(), a.npu.storage_offset());
            CpuAlias(a.npu).copy_(a.cpu);
        }
    }
    if (!npuTarget.value_or(npuInput)) return;
    DeviceScope scope(c10::Device(kNpu, device));
    const size_t nret = schema.returns().size();
    for (size_t i = stack->size() - nret; i < stack->size(); ++i) (*stack)[i] = ToNpu((*stack)[i], seen, device);
}

}  // namespace

at::Tensor npu_syncbn_emulation::CpuAlias(const at::Tensor& t) { return ::CpuAlias(t); }

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
    m.impl("empty.memory_format", &Empty);
    m.impl("empty_strided", &EmptyStrided);
    m.impl("as_strided", &at::native::as_strided_tensorimpl);
    m.impl("view", &at::native::view);
    m.impl("_reshape_alias", &at::native::_reshape_alias);
    m.impl("resize_", &Resize);
    m.impl("set_.source_Storage", &at::native::set_);
    m.impl("set_.source_Storage_storage_offset", &at::native::set_storage_cpu_);
    m.impl("_copy_from", &CopyFrom);
    m.impl("_copy_from_and_resize", &CopyFromAndResize);
    m.impl("_local_scalar_dense", &LocalScalarDense);
    m.impl("convolution_overrideable", &Convolution);
    m.impl("convolution_backward_overrideable", &ConvolutionBackward);
}

TORCH_LIBRARY_IMPL(_, PrivateUse1, m) { m.fallback(torch::CppFunction::makeFromBoxedFunction<&Fallback>()); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "npu_syncbn's emulated Ascend device (PrivateUse1 over host memory)";
    m.def("init", [](int64_t devices) {
        TORCH_CHECK(devices >= 1 && devices <= 64, "NPU_SYNCBN_EMULATE_DEVICES must be in 1..64, got ", devices);
        gDeviceCount = static_cast<c10::DeviceIndex>(devices);
        static Hooks hooks;
        if (!at::isPrivateUse1HooksRegistered()) at::RegisterPrivateUse1HooksInterface(&hooks);
    });
    m.def("host_transfers", [] { return gTransfers.load(); });
    m.def("set_auto_sync", &SetKernelAutoSync, "the twin's model of bisheng's --cce-auto-sync, on by default");
    m.def("take_kernel_log", [] {
        // [(kernel, blockDim, {buffer: (read, written)})] of the launches since the last call
        std::vector<std::tuple<std::string, uint32_t, std::map<std::string, std::pair<uint64_t, uint64_t>>>> out;
        for (const KernelLogEntry& e : TakeKernelLog()) {
            std::map<std::string, std::pair<uint64_t, uint64_t>> b;
            for (const twin::Traffic& t : e.buffers) b[t.name] = {t.read, t.written};
            out.emplace_back(e.kernel, e.blockDim, b);
        }
        return out;
    }, "GM traffic of the kernels launched since the last call (the twin's counts)");
    m.def("device_copy_bytes", [] { return gDeviceCopyBytes.load(); });
    m.def("device_count", [] { return int64_t(gDeviceCount); });
    m.def("current_device", [] { return int64_t(tDevice); });
    m.def("set_device", [](int64_t d) {
        CheckIndex(static_cast<c10::DeviceIndex>(d));
        tDevice = static_cast<c10::DeviceIndex>(d);
    });
    m.def("cpu_alias", &CpuAlias, "A CPU tensor over an npu tensor's memory (no copy, not counted)");
    m.def("adopt_cpu", [](const Tensor& t, int64_t device) { return AdoptCpu(t, static_cast<c10::DeviceIndex>(device)); },
          "An npu tensor over a CPU tensor's memory (no copy)");
    npu_syncbn_emulation::BindHccl(m);
}

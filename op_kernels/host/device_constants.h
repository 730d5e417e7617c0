/*
 * Small host constants on an Ascend (or emulated) device for the launches of
 * bn_ops.h: each launch's tiling struct, a merge launch's per-part counts and
 * the unused workspace, uploaded once per device and content and then reused,
 * so a launch in steady state allocates and uploads nothing.
 */
#ifndef NPU_SYNCBN_HOST_DEVICE_CONSTANTS_H
#define NPU_SYNCBN_HOST_DEVICE_CONSTANTS_H

#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace bn_ops {

using at::Tensor;

// The kernels only read these constants. The map is never destroyed (it would
// outlive the device allocator at exit); it is emptied past kMaxDeviceConstants
// entries (launches already issued hold their own references).
constexpr size_t kMaxDeviceConstants = 4096;

inline Tensor DeviceConstant(const void* bytes, size_t n, const Tensor& like) {
    static std::mutex mu;
    static auto* cache = new std::map<std::string, Tensor>();
    std::string key = like.device().str();
    key.push_back('\0');
    key.append(static_cast<const char*>(bytes), n);
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache->find(key);
    if (it != cache->end()) return it->second;
    if (cache->size() >= kMaxDeviceConstants) cache->clear();
    Tensor host = at::empty({int64_t(n)}, at::TensorOptions().dtype(at::kByte));
    std::memcpy(host.data_ptr(), bytes, n);
    return cache->emplace(std::move(key), host.to(like.device())).first->second;
}

// The tiling struct as a device tensor of bytes (the kernels' `tiling` argument).
template <typename Tiling>
Tensor DeviceTiling(const Tiling& t, const Tensor& like) {
    return DeviceConstant(&t, sizeof(Tiling), like);
}

// Host floats as a device tensor (the per-part element counts of a merge).
inline Tensor DeviceFloats(const std::vector<float>& v, const Tensor& like) {
    return DeviceConstant(v.data(), v.size() * sizeof(float), like).view(at::kFloat);
}

// The workspace argument: most launches need 0 bytes (BnWorkspaceBytes), and
// share one 32-byte constant; one that needs some (the packed stats kernel)
// gets its own.
inline Tensor Workspace(uint64_t bytes, const Tensor& like) {
    static const uint8_t kNone[32] = {};
    if (bytes == 0) return DeviceConstant(kNone, sizeof(kNone), like);
    return at::empty({int64_t(bytes)}, like.options().dtype(at::kByte));
}

}  // namespace bn_ops

#endif  // NPU_SYNCBN_HOST_DEVICE_CONSTANTS_H

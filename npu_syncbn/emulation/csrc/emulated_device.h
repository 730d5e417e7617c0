// What csrc/device.cpp shares with the other files of the emulated device.
#pragma once

#include <torch/extension.h>

namespace npu_syncbn_emulation {

// A CPU tensor over an npu tensor's memory (no copy, not a host transfer).
at::Tensor CpuAlias(const at::Tensor& t);

// Adds hccl_backend() to the extension module (csrc/hccl.cpp).
void BindHccl(pybind11::module& m);

}  // namespace npu_syncbn_emulation

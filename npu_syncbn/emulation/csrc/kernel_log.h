// The emulated device's kernel log: every launch's GM traffic, as the twin
// counted it (kernels.cpp appends, device.cpp's take_kernel_log hands it to
// Python), so tests can count passes on the path an NPU runs.
#ifndef NPU_SYNCBN_EMULATION_KERNEL_LOG_H
#define NPU_SYNCBN_EMULATION_KERNEL_LOG_H

#include <string>
#include <vector>

#include "twin_runtime.h"

struct KernelLogEntry {
    std::string kernel;
    uint32_t blockDim;
    std::vector<twin::Traffic> buffers;
};

// The launches since the last call, in launch order (the log is emptied). The
// log starts with the first call: until then launches are not recorded.
std::vector<KernelLogEntry> TakeKernelLog();

// The twin's model of bisheng's --cce-auto-sync (twin_pipes.h): off checks
// that the kernels order their scalar accesses themselves.
void SetKernelAutoSync(bool on);

#endif  // NPU_SYNCBN_EMULATION_KERNEL_LOG_H

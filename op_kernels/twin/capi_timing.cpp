/*
 * The timing model's part of the twin's C ABI (see capi.cpp): the timing
 * mode and its what-if switches, the modelled time of each launch of the last
 * op, the model's figures, and the planted timing kernels of
 * tests/timing_kernels.cpp.
 */
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kernel_operator.h"
#include "twin_timing_sim.h"
#include "capi_report.h"

extern "C" {
// Small kernels with known costs for the timing model's tests (tests/timing_kernels.cpp).
void twin_timing_one_copy(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_timing_rows(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_timing_overlap(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_timing_pipe_all(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_timing_stream(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_timing_one_core_streams(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_timing_sync_all(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
void twin_timing_queue_depth(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling);
}

extern "C" {

// 0 off (the default), 1 on, 2 time-only (the kernels' per-element work
// skipped: their results are garbage, their timing the same). Returns the old mode.
int twin_set_timing(int mode) {
    const int old = twin::CurrentTimingMode();
    twin::SetTimingMode(mode < 0 || mode > 2 ? twin::kTimingOff : mode);
    return old;
}

// What-if switches of the model (twin_timing.h, TimingAblation: 1 no
// PIPE_ALL, 2 no 512-byte granules, 4 no scalar issue stalls); returns the old ones.
int twin_set_timing_ablation(int flags) {
    return twin::TimingAblationFlags().exchange(flags);
}

// Launches of the last op that the timing model played.
int twin_timing_launches() { return static_cast<int>(twin_capi::Times().size()); }

// Launch i of the last op: its kernel name, and 14 figures: kernel ns, cores,
// busy cores, mean busy-core end ns, per-pipe busy ns of the busiest core
// (S, V, MTE2, MTE3, barrier nodes), HBM bytes, instructions, barrier nodes
// on the slowest core, the SoC's HBM bytes per ns, the clock in GHz.
int twin_timing_get(int i, char* name, int nameLen, double* out14) {
    if (i < 0 || i >= static_cast<int>(twin_capi::Times().size()) || nameLen < 1) return 2;
    const twin::LaunchTime& t = twin_capi::Times()[i];
    std::strncpy(name, t.kernel.c_str(), nameLen - 1);
    name[nameLen - 1] = '\0';
    const double v[14] = {t.ns, double(t.cores), double(t.busyCores), t.meanCoreNs, t.pipeBusyNs[0], t.pipeBusyNs[1],
                          t.pipeBusyNs[2], t.pipeBusyNs[3], t.pipeBusyNs[4], t.hbmBytes, double(t.instrs),
                          double(t.barriers), twin::timing::HbmBytesPerNs(twin::CurrentSoc().name),
                          twin::timing::kClockGhz};
    std::memcpy(out14, v, sizeof(v));
    return 0;
}

// The host-side costs of twin_timing_params.h, in its field order (7 values, us).
void twin_timing_host_costs(double* out7) {
    const twin::timing::HostCosts& h = twin::timing::kHostCosts;
    const double v[7] = {h.kernelStartUs, h.fillKernelUs, h.h2dDeviceUs, h.launchHostUs,
                         h.allocHostUs,   h.h2dHostUs,    h.opDispatchUs};
    std::memcpy(out7, v, sizeof(v));
}

// Model time of one transfer of `bytes` contiguous bytes on pipe 2 (MTE2) or 3 (MTE3), one core alone.
double twin_timing_dma_ns(int pipe, double bytes) {
    return twin::timing::DmaNs(pipe == 3 ? twin::kPipeMte3 : twin::kPipeMte2, bytes);
}

// Model time of one vector instruction of `cyclesPerRepeat` over `bytes`.
double twin_timing_vector_ns(double cyclesPerRepeat, uint64_t bytes) {
    return twin::timing::VectorNs(cyclesPerRepeat, bytes);
}

// Runs a timing test kernel on `cores` cores over a GM buffer of `bytes`
// bytes; its tiling is {bytes, arg} as two uint64 (what each kernel does
// with arg: tests/timing_kernels.cpp).
int twin_run_timing_kernel(const char* name, uint32_t cores, uint64_t bytes, uint64_t arg) {
    using Entry = void (*)(GM_ADDR, GM_ADDR, GM_ADDR);
    struct Named { const char* name; Entry entry; };
    static const Named kernels[] = {
        {"one_copy", twin_timing_one_copy},
        {"rows", twin_timing_rows},
        {"overlap", twin_timing_overlap},
        {"pipe_all", twin_timing_pipe_all},
        {"stream", twin_timing_stream},
        {"one_core_streams", twin_timing_one_core_streams},
        {"sync_all", twin_timing_sync_all},
        {"queue_depth", twin_timing_queue_depth},
    };
    for (const Named& k : kernels) {
        if (std::strcmp(k.name, name) == 0) {
            // 512-byte aligned, as device allocations are: granules are then predictable
            const uint64_t size = (bytes + 511) / 512 * 512;
            std::unique_ptr<uint8_t, void (*)(void*)> buf(static_cast<uint8_t*>(std::aligned_alloc(512, size)), std::free);
            std::memset(buf.get(), 0, size);
            uint64_t tiling[2] = {bytes, arg};
            twin_capi::SetBlockDim(cores);
            return twin_capi::Report(twin::Launch(name, cores, {{"buffer", buf.get(), bytes}, {"tiling", tiling, sizeof(tiling)}},
                                       [&] { k.entry(buf.get(), nullptr, reinterpret_cast<uint8_t*>(tiling)); }));
        }
    }
    twin_capi::SetError(std::string("no timing kernel named '") + name + "'");
    return 2;
}

}  // extern "C"

// Every figure the twin's timing model (twin_timing.h) uses, with its source.
// A figure marked "guess" has no published source: it is a stated assumption
// the table in docs/ascend_timing.md depends on, to be replaced by a
// measurement on hardware.
//
// Main source: Huawei's open msKPP (MindStudio Kernel Performance Prediction,
// repository Ascend/mskpp, csrc/prof_data/resource910b.cpp): single-core
// measurements on an Ascend 910B1. Only the numbers are taken, the model is
// written here.
#ifndef NPU_SYNCBN_TWIN_TIMING_PARAMS_H
#define NPU_SYNCBN_TWIN_TIMING_PARAMS_H

#include <cstdint>

namespace twin {
namespace timing {

// Core clock. msKPP's data was taken at 1.8 GHz (it converts with 1.85 GHz);
// the model converts every cycle count with 1.8 GHz.
constexpr double kClockGhz = 1.8;

// One point of a per-core DMA curve: a transfer of `kib` KiB runs at `gibps` GiB/s.
struct CurvePoint {
    double kib;
    double gibps;
};

// GM -> UB (MTE2), 910B1, one core (msKPP). Linear in bandwidth between the
// points, clamped at the ends (as msKPP interpolates).
constexpr CurvePoint kMte2Curve[] = {{1, 7.29},   {2, 13.48},  {4, 23.60},  {8, 42.74}, {16, 67.99},
                                     {32, 77.19}, {64, 77.05}, {128, 78.49}, {200, 78.56}};
// UB -> GM (MTE3), 910B1, one core (msKPP). msKPP divides transfers into GM by
// 4.5 unless told the L2 hit ratio; this model does not: a write lands in L2
// at the measured rate, and what L2 must hand on to HBM is bounded by the
// chip-wide HBM cap below (writes count against it byte for byte, like reads).
constexpr CurvePoint kMte3Curve[] = {{1, 11.39},  {2, 22.11},  {4, 37.91},  {8, 57.84},
                                     {16, 86.85}, {32, 108.39}, {64, 110.66}};
constexpr int kMte2Points = sizeof(kMte2Curve) / sizeof(kMte2Curve[0]);
constexpr int kMte3Points = sizeof(kMte3Curve) / sizeof(kMte3Curve[0]);

// Fixed start-up of one transfer (the intercept of a fit of the curves above:
// GM->UB about 118 ns + bytes / 127 B/ns, UB->GM about 77 ns + bytes / 169 B/ns,
// up to 32 KiB). Below 1 KiB msKPP lets time fall linearly to 0; the model
// instead extends the curve from its 1 KiB point with the fit's slope, so a
// 32-byte copy still costs about the latency.
constexpr double kMte2LatencyNs = 118.0;
constexpr double kMte3LatencyNs = 77.0;
constexpr double kMte2SlopeBytesPerNs = 127.0;
constexpr double kMte3SlopeBytesPerNs = 169.0;

// Memory access granularity of the 910 series (commonly given as 512 bytes;
// Ascend 950 announced to shrink it to 128 B). Each burst of a copy (one
// contiguous GM run) costs its core's DMA time for every 512-byte granule it
// touches: a 128-byte row costs like 512 bytes. HBM itself is charged the
// bytes moved (L2 serves the rest of a granule to the neighbouring bursts).
constexpr double kGranuleBytes = 512.0;

// Vector instructions (msKPP): one repeat = 256 bytes; steady-state cycles per
// repeat by instruction; a short instruction costs at least kVecMinCycles.
// cycles = max(kVecMinCycles, perRepeat * repeats + 1) reproduces msKPP's
// examples within a cycle (Add fp32 at 4, 16, 64, 256 repeats: 9, 33, 129, 513).
constexpr double kVecRepeatBytes = 256.0;
constexpr double kVecMinCycles = 3.0;
constexpr double kCyclesAdds = 1.0;      // Adds, Muls, Maxs, Duplicate, Cast, Compares (scalar form), Rsqrt
constexpr double kCyclesAdd = 2.0;       // Add, Sub, Mul, Select, fp32 Sqrt
constexpr double kCyclesReduceSum = 3.0; // fp32 ReduceSum (vcadd)
constexpr double kCyclesDiv = 4.0;       // Div, fp16 Sqrt

// Scalar unit (guesses: msKPP models no scalar work). A GetValue / SetValue of
// UB, with the loop around it; a GetValue / SetValue of GM through the scalar
// data cache, taken as a GM round trip.
constexpr double kScalarUbCycles = 16.0;  // guess
constexpr double kScalarGmNs = 200.0;     // guess
// SetFlag / WaitFlag: 1 cycle each (msKPP).
constexpr double kFlagCycles = 1.0;

// Chip-wide HBM bandwidth per SoC: what all cores' DMA together may move.
// msKPP models every core alone (48 x ~80 GB/s would exceed any 910B HBM).
// Public figures vary (0.4 to 1.6 TB/s are quoted for 910B); the model takes
// the commonly quoted 1.6 TB/s (64 GB HBM2e) for 910B1/B2/B3 and one die of
// 910_93, and half of it for 910B4 (32 GB, half the HBM stacks). Guesses from
// third-party public material, not a Huawei datasheet.
struct SocTiming {
    const char* name;   // as in host/soc.h
    double hbmGBps;     // GB/s = bytes per ns
};
constexpr SocTiming kSocTiming[] = {
    {"Ascend910B1", 1600.0}, {"Ascend910B2", 1600.0}, {"Ascend910B3", 1600.0},
    {"Ascend910B4", 800.0},  {"Ascend910_93", 1600.0},
};
constexpr double kDefaultHbmGBps = 1600.0;

// Host and launch costs per op (all guesses, no published figure; torch-npu
// and CANN document none). Device side: what one kernel launch adds to the
// stream's time besides the kernel (task dispatch to the cores and the
// completion report), a fill kernel of a small at::zeros / at::full, a small
// host-to-device copy (the tiling). Host side: one launch call, one device
// allocation from the caching allocator, one pageable host-to-device copy of a
// few hundred bytes (blocking), the dispatcher's cost of one op.
struct HostCosts {
    double kernelStartUs;   // device, per kernel launch (guess)
    double fillKernelUs;    // device, one fill kernel of a (C,) tensor, start included (guess)
    double h2dDeviceUs;     // device, one small H2D copy on the stream (guess)
    double launchHostUs;    // host, per kernel or fill launch call (guess)
    double allocHostUs;     // host, per device allocation (guess)
    double h2dHostUs;       // host, per pageable H2D copy of the tiling (guess)
    double opDispatchUs;    // host, torch dispatch of one op (guess)
};
constexpr HostCosts kHostCosts = {3.0, 4.0, 2.0, 5.0, 1.0, 10.0, 5.0};

}  // namespace timing
}  // namespace twin

#endif  // NPU_SYNCBN_TWIN_TIMING_PARAMS_H

// Timing model of the CPU twin, the recording half: while a kernel runs in the
// twin, every API call the pipe model sees (twin_pipes.h) also becomes one
// instruction of its core's trace, with its pipe (S, V, MTE2, MTE3), its cost
// and what it waits for:
//   - the instruction before it on its own pipe (one in-order queue per pipe);
//   - read after write: the last writer of every UB block it reads; write after
//     read / write: the last writer and the last reader on each pipe of every
//     UB block it writes. Queue depth (EnQue/DeQue with BUFFER_NUM buffers)
//     and buffer reuse come out of these: a third tile waits for the first
//     buffer's readers;
//   - the scalar unit issues every instruction in program order, so anything
//     after a scalar access (GetValue / SetValue, which wait for their data),
//     a PipeBarrier<PIPE_ALL> (which waits for every pipe to drain) or a
//     SyncAll (which waits for every core) starts after it;
//   - SetFlag / WaitFlag: the waiting pipe's next instructions start after the
//     setting pipe's instructions before SetFlag.
// Costs (figures in twin_timing_params.h): a DMA is a latency plus its
// effective bytes at its core's rate for the copy's size, then shares the
// chip's HBM with every other core's DMA (twin_timing_sim.h plays all cores
// at once after the launch); a vector call costs cycles from its repeats; a
// scalar access a fixed cost.
// Per-element work is not timed: in time-only mode (SetTimingMode(kTimeOnly))
// the twin skips it and keeps the kernels' control flow, checks and bookkeeping.
#ifndef NPU_SYNCBN_TWIN_TIMING_H
#define NPU_SYNCBN_TWIN_TIMING_H

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "twin_runtime.h"
#include "twin_timing_params.h"

namespace twin {

enum TimingMode : int { kTimingOff = 0, kTimingOn = 1, kTimeOnly = 2 };

inline std::atomic<int>& TimingModeFlag() {
    static std::atomic<int> mode{kTimingOff};
    return mode;
}
inline int CurrentTimingMode() { return TimingModeFlag().load(std::memory_order_relaxed); }
inline void SetTimingMode(int mode) { TimingModeFlag() = mode; }
// False in time-only mode: copies and vector math skip their per-element work.
inline bool MovesData() { return CurrentTimingMode() != kTimeOnly; }

// What-if switches, to attribute time to a cause by leaving it out:
// kNoPipeAll plays PIPE_ALL barriers as if only the data dependencies they
// cover were synchronised; kNoGranule charges each burst its bytes (rounded
// to 32) instead of whole 512-byte granules; kNoScalarStall lets the scalar
// unit issue past a GetValue / SetValue before it completes (optimistic: a
// value read back would have to be known in advance).
enum TimingAblation : int { kNoPipeAll = 1, kNoGranule = 2, kNoScalarStall = 4 };
inline std::atomic<int>& TimingAblationFlags() {
    static std::atomic<int> flags{0};
    return flags;
}
inline bool Ablated(int what) { return (TimingAblationFlags().load(std::memory_order_relaxed) & what) != 0; }

// Pipes of the timing model: the four of twin_pipes.h, and kNode for zero-cost
// ordering points (PIPE_ALL barriers, SyncAll).
constexpr int kTimePipes = 5;
constexpr uint8_t kNode = 4;

enum InstrKind : uint8_t { kFixed, kDma, kSync };

struct Instr {
    int32_t dep[kTimePipes];  // per pipe: the latest instruction this one waits for (-1: none)
    uint8_t pipe;
    uint8_t kind;
    uint32_t sync;      // kSync: which SyncAll of the core (0, 1, ...)
    double ns;          // kFixed: duration; kDma: latency
    double work;        // kDma: effective bytes (granules touched) at `rate`
    double rate;        // kDma: the core's own rate, bytes per ns
    double hbmPerWork;  // kDma: HBM bytes per effective byte (<= 1)
    double bytes;       // kDma: bytes moved
};

// One core's instructions, built as the kernel runs.
class TimeTrace {
public:
    TimeTrace() : blocks_(kUbBytes / kBlockBytes) {
        for (int p = 0; p < kTimePipes; ++p) last_[p] = -1;
        for (auto& a : flags_)
            for (auto& b : a)
                for (auto& c : b) c = -1;
        OpenNext();
    }

    // The next instruction (on `pipe`) reads or writes UB blocks [first, last].
    void Touch(uint8_t pipe, uint32_t first, uint32_t last, bool write) {
        const int32_t me = static_cast<int32_t>(instrs_.size());
        for (uint32_t b = first; b <= last; ++b) {
            Block& blk = blocks_[b];
            if (blk.writer >= 0 && blk.writer != me) Need(blk.writerPipe, blk.writer);
            if (write) {
                for (int q = 0; q < 4; ++q) {
                    if (blk.reader[q] >= 0 && blk.reader[q] != me) Need(uint8_t(q), blk.reader[q]);
                    blk.reader[q] = -1;
                }
                blk.writer = me;
                blk.writerPipe = pipe;
            } else {
                blk.reader[pipe] = me;
            }
        }
    }

    // Closes the next instruction: a fixed cost on `pipe`.
    void Fixed(uint8_t pipe, double ns) { Close(pipe, kFixed, ns); }

    // Closes the next instruction: a DMA on MTE2 (GM -> UB) or MTE3 (UB -> GM)
    // of `rows` bursts of `rowBytes`, rows `pitch` bytes apart in GM starting
    // `gm` bytes into its (512-byte aligned) buffer, or one burst of
    // rows * rowBytes when `joined`.
    void Dma(uint8_t pipe, uintptr_t gm, uint64_t rowBytes, uint64_t rows, uint64_t pitch, bool joined);

    void BarrierAll() {
        if (!Ablated(kNoPipeAll)) Close(kNode, kFixed, 0.0);
    }
    void SyncAll() {
        Close(kNode, kSync, 0.0);
        instrs_.back().sync = syncs_++;
    }
    void SetFlag(uint8_t from, uint8_t to, int id) {
        Close(from, kFixed, timing::kFlagCycles / timing::kClockGhz);
        flags_[from][to][id & 7] = static_cast<int32_t>(instrs_.size()) - 1;
    }
    void WaitFlag(uint8_t from, uint8_t to, int id) {
        const int32_t set = flags_[from][to][id & 7];
        if (set >= 0) Need(from, set);
        Close(to, kFixed, timing::kFlagCycles / timing::kClockGhz);
    }

    std::vector<Instr>& Instrs() { return instrs_; }

private:
    struct Block {
        int32_t writer = -1;
        int32_t reader[4] = {-1, -1, -1, -1};
        uint8_t writerPipe = 0;
    };

    void Need(uint8_t pipe, int32_t i) { next_.dep[pipe] = std::max(next_.dep[pipe], i); }

    void OpenNext() {
        next_ = Instr{};
        for (int p = 0; p < kTimePipes; ++p) next_.dep[p] = -1;
    }

    void Close(uint8_t pipe, uint8_t kind, double ns) {
        Need(pipe, last_[pipe]);                 // in order on its own pipe
        if (fence_ >= 0) Need(fencePipe_, fence_);  // issued after the last scalar access / barrier
        if (pipe == kNode) {
            for (uint8_t q = 0; q < kTimePipes; ++q) Need(q, last_[q]);  // drains every pipe
        }
        next_.pipe = pipe;
        next_.kind = kind;
        next_.ns = ns;
        const int32_t me = static_cast<int32_t>(instrs_.size());
        instrs_.push_back(next_);
        last_[pipe] = me;
        if (pipe == kNode || (pipe == kPipeS && !Ablated(kNoScalarStall))) {
            fence_ = me;
            fencePipe_ = pipe;
        }
        OpenNext();
    }

    std::vector<Instr> instrs_;
    std::vector<Block> blocks_;
    Instr next_;
    int32_t last_[kTimePipes];
    int32_t fence_ = -1;
    uint8_t fencePipe_ = 0;
    uint32_t syncs_ = 0;
    int32_t flags_[4][4][8];
};

namespace timing {

// Seconds-free arithmetic: bytes per ns equals GB/s.
inline double GibpsToBytesPerNs(double gibps) { return gibps * 1.073741824; }

// Time of one transfer of `bytes` on a per-core curve (interpolated linearly
// in bandwidth, clamped at the ends); below the first point, the first
// point's time less the missing bytes at the fit's slope.
inline double CurveNs(const CurvePoint* curve, int points, double slope, double bytes) {
    const double kib = bytes / 1024.0;
    if (kib <= curve[0].kib) {
        const double t0 = curve[0].kib * 1024.0 / GibpsToBytesPerNs(curve[0].gibps);
        return t0 - (curve[0].kib * 1024.0 - bytes) / slope;
    }
    double gibps = curve[points - 1].gibps;
    for (int i = 1; i < points; ++i) {
        if (kib <= curve[i].kib) {
            const double f = (kib - curve[i - 1].kib) / (curve[i].kib - curve[i - 1].kib);
            gibps = curve[i - 1].gibps + f * (curve[i].gibps - curve[i - 1].gibps);
            break;
        }
    }
    return bytes / GibpsToBytesPerNs(gibps);
}

inline double DmaNs(uint8_t pipe, double bytes) {
    return pipe == kPipeMte2 ? CurveNs(kMte2Curve, kMte2Points, kMte2SlopeBytesPerNs, bytes)
                             : CurveNs(kMte3Curve, kMte3Points, kMte3SlopeBytesPerNs, bytes);
}

inline double DmaLatencyNs(uint8_t pipe) { return pipe == kPipeMte2 ? kMte2LatencyNs : kMte3LatencyNs; }

// Granules of `granule` bytes that GM bytes [begin, begin + bytes) touch.
inline uint64_t Granules(uintptr_t begin, uint64_t bytes, uint64_t granule) {
    return bytes == 0 ? 0 : (begin + bytes - 1) / granule - begin / granule + 1;
}

// Cycles of a vector instruction over `bytes` of its widest operand.
inline double VectorNs(double cyclesPerRepeat, uint64_t bytes) {
    const double repeats = static_cast<double>((bytes + uint64_t(kVecRepeatBytes) - 1) / uint64_t(kVecRepeatBytes));
    return std::max(kVecMinCycles, cyclesPerRepeat * repeats + 1.0) / kClockGhz;
}

}  // namespace timing

inline void TimeTrace::Dma(uint8_t pipe, uintptr_t gm, uint64_t rowBytes, uint64_t rows, uint64_t pitch,
                           bool joined) {
    const uint64_t bytes = rowBytes * rows;
    const uint64_t granule = Ablated(kNoGranule) ? kBlockBytes : static_cast<uint64_t>(timing::kGranuleBytes);
    uint64_t granules = 0;
    if (joined) {
        granules = timing::Granules(gm, bytes, granule);
    } else {
        for (uint64_t r = 0; r < rows; ++r) granules += timing::Granules(gm + r * pitch, rowBytes, granule);
    }
    const double work = static_cast<double>(granules * granule);
    const double total = timing::DmaNs(pipe, work);
    const double latency = std::min(timing::DmaLatencyNs(pipe), 0.5 * total);
    Close(pipe, kDma, latency);
    Instr& in = instrs_.back();
    in.work = work;
    in.rate = work / (total - latency);
    in.hbmPerWork = work > 0 ? static_cast<double>(bytes) / work : 0.0;
    in.bytes = static_cast<double>(bytes);
}

// ---------------------------------------------------------------- hooks for the API twin
// The current core's trace, or nullptr when timing is off.
inline TimeTrace* Trace() { return Core().timing.get(); }

inline void TimeTouch(uint8_t pipe, uint32_t first, uint32_t last, bool write) {
    if (TimeTrace* t = Trace()) t->Touch(pipe, first, last, write);
}
// A vector instruction over `bytes` of its widest operand (its UB accesses touched just before).
inline void TimeVector(double cyclesPerRepeat, uint64_t bytes) {
    if (TimeTrace* t = Trace()) t->Fixed(kPipeV, timing::VectorNs(cyclesPerRepeat, bytes));
}
// A scalar access of UB (touched just before) or of GM.
inline void TimeScalarUb() {
    if (TimeTrace* t = Trace()) t->Fixed(kPipeS, timing::kScalarUbCycles / timing::kClockGhz);
}
inline void TimeScalarGm() {
    if (TimeTrace* t = Trace()) t->Fixed(kPipeS, timing::kScalarGmNs);
}
// A copy's GM side starts at `gm` in launch buffer `buf`; granules count from
// the buffer's start, taken as 512-byte aligned (as device allocations are).
inline void TimeCopy(uint8_t pipe, const GmBuffer* buf, const void* gm, uint64_t rowBytes, uint64_t rows,
                     uint64_t pitch, bool joined) {
    if (TimeTrace* t = Trace()) {
        const uintptr_t offset = static_cast<uintptr_t>(static_cast<const uint8_t*>(gm) - buf->base);
        t->Dma(pipe, offset, rowBytes, rows, pitch, joined);
    }
}

}  // namespace twin

#endif  // NPU_SYNCBN_TWIN_TIMING_H

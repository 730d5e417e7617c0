// Pipe model of the CPU twin: which pipe last wrote, and which pipes read, each
// 32-byte block of a core's UB, and which pipe pairs are ordered. The twin runs
// every pipe in program order, so without this a missing synchronisation would
// never show; with it, an access that hardware could run out of order is an
// error ("pipe hazard") naming the API call and the two pipes.
//
// Pipes: DataCopy/DataCopyPad into UB write on MTE2, out of UB read on MTE3;
// vector ops read and write on V; LocalTensor GetValue/SetValue on S.
// What orders two accesses on different pipes (asc-devkit, "核内同步/关键特性说明"):
//   - PipeBarrier<PIPE_ALL>: everything before it, against everything after;
//   - SetFlag<HardEvent::A_B>(id) ... WaitFlag<HardEvent::A_B>(id) (or TQueSync<A, B>):
//     A's accesses before SetFlag, against B's after WaitFlag;
//   - the TPipe/TQue framework: EnQue -> DeQue hands a buffer from its producer
//     to its consumer, FreeTensor -> AllocTensor from its consumer back (its
//     auto-sync table covers V, MTE2, MTE3 among themselves, never PIPE_S);
//   - bisheng's --cce-auto-sync (which ascendc_library passes, cmake/asc/
//     legacy_modules/bisheng_intf.cmake): S against V, MTE2 and MTE3 both ways
//     for LocalTensor GetValue/SetValue. So a GetValue right after DeQue is
//     ordered by the compiler, not by the queue; twin_set_auto_sync(0) models a
//     build with --cce-auto-sync=off, where such a read needs its own event.
// Same-pipe accesses are in order, but a vector instruction that reads what an
// earlier one wrote needs PipeBarrier<PIPE_V> between them, which bisheng's
// --cce-auto-sync inserts; twin_set_vector_auto_sync(0) models a build without
// it: such a read-after-write with no PIPE_V (or PIPE_ALL) barrier in between
// is a hazard. The kernels rely on the compiler for these (op_kernels/
// CMakeLists.txt states it), and order every other pair of pipes themselves.
// Every access is also handed to the timing model (twin_timing.h), which
// records the same calls as instructions with their costs.
#ifndef NPU_SYNCBN_TWIN_PIPES_H
#define NPU_SYNCBN_TWIN_PIPES_H

#include <cstdint>
#include <string>
#include <vector>

#include "twin_runtime.h"
#include "twin_timing.h"

namespace twin {

inline const char* PipeName(uint8_t p) {
    static const char* const names[] = {"S", "V", "MTE2", "MTE3"};
    return p < kPipeCount ? names[p] : "none";
}

// Whether the compiler's auto-sync orders S against the other pipes (default
// on, as ascendc_library builds). Process-wide; set through the C ABI.
bool AutoSync();
void SetAutoSync(bool on);

// Whether the compiler's auto-sync orders a vector read after a vector write
// (PipeBarrier<PIPE_V>); default on. Process-wide; set through the C ABI.
bool VectorAutoSync();
void SetVectorAutoSync(bool on);

struct PipeState {
    static constexpr uint32_t kBlocks = kUbBytes / kBlockBytes;
    struct Block {
        uint32_t writeSeq = 0;
        uint32_t readSeq[kPipeCount] = {0, 0, 0, 0};
        const char* writeApi = "";
        const char* readApi = "";  // the latest read, whatever its pipe
        uint8_t writer = kPipeNone;
        bool handedOff = false;    // a queue hand-off ordered the last write against V, MTE2, MTE3
    };
    std::vector<Block> blocks;  // grown to the UB a kernel touches (most use most of it)
    uint32_t seq = 1;
    uint32_t ordered[kPipeCount][kPipeCount] = {};  // accesses of `from` up to this seq are ordered before `to`
    uint32_t flags[kPipeCount][kPipeCount][8] = {};  // SetFlag seq per event id
    uint32_t vectorBarrier = 0;  // seq of the latest PipeBarrier<PIPE_V> (or PIPE_ALL)

    Block& At(uint32_t b) {
        if (b >= blocks.size()) blocks.resize(b + 1);
        return blocks[b];
    }

    bool Ordered(uint8_t from, uint8_t to, uint32_t at) const {
        if (from == to || from == kPipeNone) return true;
        if ((from == kPipeS || to == kPipeS) && AutoSync()) return true;
        return at <= ordered[from][to];
    }

    void BarrierAll() {
        for (auto& row : ordered)
            for (auto& v : row) v = seq;
        vectorBarrier = seq;
        ++seq;
    }
    void BarrierVector() { vectorBarrier = seq++; }
    void Set(uint8_t from, uint8_t to, int id) { flags[from][to][id & 7] = seq++; }
    void Wait(uint8_t from, uint8_t to, int id) {
        if (flags[from][to][id & 7] > ordered[from][to]) ordered[from][to] = flags[from][to][id & 7];
        ++seq;
    }
};

// The current core's pipe state (made at its first use in a launch).
PipeState& Pipes();

// Block range of [p, p + bytes) in the current core's UB.
inline void UbBlocks(const void* p, uint64_t bytes, uint32_t& first, uint32_t& last) {
    const uint64_t off = static_cast<uint64_t>(static_cast<const uint8_t*>(p) - Core().ub);
    first = static_cast<uint32_t>(off / kBlockBytes);
    last = static_cast<uint32_t>((off + (bytes ? bytes : 1) - 1) / kBlockBytes);
    if (last >= PipeState::kBlocks) last = PipeState::kBlocks - 1;
}

[[noreturn]] inline void Hazard(const char* api, uint8_t pipe, const char* what, const char* otherApi, uint8_t other) {
    Fail("pipe hazard", std::string(api) + " (" + PipeName(pipe) + ") " + what + " " + otherApi + " (" +
                            PipeName(other) + ") with no PipeBarrier, queue hand-off or SetFlag/WaitFlag in between");
}

// The blocks of [p, p + bytes) an access by `pipe` touches, each checked
// against its last write (read-after-write, write-after-write) and passed to
// `then` with the access's sequence number.
template <typename Then>
inline void PipeAccess(const char* api, uint8_t pipe, const void* p, uint64_t bytes, const char* what, Then then) {
    PipeState& s = Pipes();
    uint32_t first, last;
    UbBlocks(p, bytes, first, last);
    const uint32_t now = s.seq++;
    for (uint32_t b = first; b <= last; ++b) {
        PipeState::Block& blk = s.At(b);
        const bool handed = blk.handedOff && pipe != kPipeS;
        if (!handed && !s.Ordered(blk.writer, pipe, blk.writeSeq)) Hazard(api, pipe, what, blk.writeApi, blk.writer);
        then(s, blk, now);
    }
}

// A read of UB [p, p + bytes) by `pipe` in API call `api`.
inline void PipeRead(const char* api, uint8_t pipe, const void* p, uint64_t bytes) {
    if (TimeTrace* t = Trace()) {
        uint32_t first, last;
        UbBlocks(p, bytes, first, last);
        t->Touch(pipe, first, last, false);
    }
    PipeAccess(api, pipe, p, bytes, "reads UB written by", [&](PipeState& s, PipeState::Block& blk, uint32_t now) {
        if (pipe == kPipeV && blk.writer == kPipeV && blk.writeSeq > s.vectorBarrier && !VectorAutoSync()) {
            Fail("pipe hazard", std::string(api) + " (V) reads UB written by " + blk.writeApi +
                                    " (V) with no PipeBarrier<PIPE_V> in between (bisheng's --cce-auto-sync "
                                    "inserts it; this build models it off)");
        }
        blk.readSeq[pipe] = now;
        blk.readApi = api;
    });
}

// A write of UB [p, p + bytes) by `pipe` in API call `api` (also checked
// against unordered reads: write-after-read).
inline void PipeWrite(const char* api, uint8_t pipe, const void* p, uint64_t bytes) {
    if (TimeTrace* t = Trace()) {
        uint32_t first, last;
        UbBlocks(p, bytes, first, last);
        t->Touch(pipe, first, last, true);
    }
    PipeAccess(api, pipe, p, bytes, "overwrites UB written by", [&](PipeState& s, PipeState::Block& blk, uint32_t now) {
        for (uint8_t q = 0; q < kPipeCount; ++q) {
            if (blk.readSeq[q] != 0 && !s.Ordered(q, pipe, blk.readSeq[q])) {
                Hazard(api, pipe, "overwrites UB still being read by", blk.readApi, q);
            }
            blk.readSeq[q] = 0;
        }
        blk.writer = pipe;
        blk.writeSeq = now;
        blk.writeApi = api;
        blk.handedOff = false;
    });
}

// A queue hand-off of a buffer (EnQue -> DeQue, FreeTensor -> AllocTensor):
// what V, MTE2 and MTE3 did to it so far is ordered against what they do
// next; scalar accesses are not (the framework's events never involve PIPE_S).
inline void PipeHandOff(const void* p, uint64_t bytes) {
    PipeState& s = Pipes();
    uint32_t first, last;
    UbBlocks(p, bytes, first, last);
    for (uint32_t b = first; b <= last; ++b) {
        PipeState::Block& blk = s.At(b);
        blk.handedOff = true;
        for (uint8_t q = kPipeV; q < kPipeCount; ++q) blk.readSeq[q] = 0;
    }
}

}  // namespace twin

#endif  // NPU_SYNCBN_TWIN_PIPES_H

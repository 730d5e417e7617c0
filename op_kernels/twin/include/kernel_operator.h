/*
 * CPU twin of the AscendC API subset used by the kernels in op_kernels/kernels, written
 * from the public API names and documented semantics only (no CANN code or
 * headers). The kernel sources compile unmodified against this header.
 *
 * What it models, and checks (a broken rule raises twin::Violation):
 *   - TPipe / TQue / TBuf carve the UB of the configured SoC (host/soc.h;
 *     192 KiB) per core; going past it is a "UB overflow", more than 64
 *     buffers in one kernel "too many buffers", and a total that differs from
 *     the host tiling's plan "UB plan mismatch".
 *   - block_dim above the SoC's physical vector cores: "block_dim over cores".
 *   - SyncAll(): only in a kernel that declared a MIX type with
 *     KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIV_1_0) ("SyncAll needs MIX");
 *     the software SyncAll(gm, ub) only on a GM area zeroed before the launch
 *     and large enough ("SyncAll workspace").
 *   - DataCopyParams out of range (blockCount 1..4095, blockLen >= 1): "bad
 *     DataCopyParams"; level-0 repeat counts above 255: "repeat over 255".
 *   - bfloat16_t has no scalar conversions (twin_half.h: compile error "scalar
 *     bf16 cast"); ToFloat / ToBfloat16 are the helpers.
 *   - AllocTensor / EnQue / DeQue / FreeTensor follow each buffer's state; any
 *     out-of-order use or a buffer not freed at kernel end is a "queue imbalance".
 *   - DataCopy needs 32-byte multiples and 32-byte aligned UB addresses
 *     ("misaligned DataCopy"); DataCopyPad moves any length, each block landing
 *     32-byte aligned in UB, pads filled only when isPad is set (else poisoned).
 *   - Vector operands must start 32-byte aligned and fit their tensors.
 *   - GM accesses must stay inside the launch's buffers and are counted, with
 *     the byte size of every burst (one contiguous GM run of a copy).
 * Fresh UB is poisoned with 0xFF bytes (NaN as float), so reading data that was
 * never written shows up as NaN in results.
 * With the timing model on (twin_timing.h), the same calls are also recorded as
 * timed instructions per pipe; in its time-only mode the per-element work of
 * copies and vector math is skipped.
 */
#ifndef NPU_SYNCBN_TWIN_KERNEL_OPERATOR_H
#define NPU_SYNCBN_TWIN_KERNEL_OPERATOR_H

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <string>
#include <type_traits>
#include <vector>

#include "twin_half.h"
#include "twin_runtime.h"

#define __aicore__
#define __global__
#define __gm__
#define GM_ADDR uint8_t*

enum pipe_t { PIPE_S, PIPE_V, PIPE_M, PIPE_MTE1, PIPE_MTE2, PIPE_MTE3, PIPE_ALL };

// Kernel types of KERNEL_TASK_TYPE_DEFAULT (same names as AscendC's). The real
// macro is a compile-time marker for the launch-stub generator; the twin makes
// it a statement that records the type, so SyncAll can check it.
enum KernelMetaType : uint8_t {
    KERNEL_TYPE_AIV_ONLY,
    KERNEL_TYPE_AIC_ONLY,
    KERNEL_TYPE_MIX_AIV_1_0,
    KERNEL_TYPE_MIX_AIC_1_0,
    KERNEL_TYPE_MIX_AIC_1_1,
    KERNEL_TYPE_MIX_AIC_1_2,
};
#define KERNEL_TASK_TYPE_DEFAULT(value) ::twin::Core().kernelType = static_cast<int>(value)

namespace twin {

inline std::string Str(uint64_t v) { return std::to_string(v); }

inline uint64_t UbOffset(const void* p) {
    return static_cast<uint64_t>(static_cast<const uint8_t*>(p) - Core().ub);
}

inline void CheckUbAligned(const char* op, const void* p) {
    if (UbOffset(p) % kBlockBytes != 0) {
        Fail(std::string("misaligned ") + op, "UB address offset " + Str(UbOffset(p)) + " is not 32-byte aligned");
    }
}

inline void CheckCount(const char* op, int64_t count, uint64_t size) {
    if (count < 0 || static_cast<uint64_t>(count) > size) {
        Fail("UB out of bounds", std::string(op) + " of " + std::to_string(count) + " elements on a tensor of " +
                                     Str(size));
    }
}

// State of one UB buffer owned by a TQue / TBuf.
struct Slot {
    enum State { FREE, ALLOCATED, QUEUED, DEQUEUED };
    uint8_t* addr = nullptr;
    uint32_t bytes = 0;
    State state = FREE;
};

inline uint8_t* AllocUb(uint64_t bytes, const char* what) {
    CoreContext& core = Core();
    const uint64_t aligned = (bytes + kBlockBytes - 1) / kBlockBytes * kBlockBytes;
    const uint64_t ub = core.launch->soc->ubBytes;
    if (core.ubUsed + aligned > ub) {
        Fail("UB overflow", std::string(what) + " of " + Str(aligned) + " bytes brings the UB total to " +
                                Str(core.ubUsed + aligned) + " bytes > " + Str(ub) + " (UB of " +
                                core.launch->soc->name + ")");
    }
    if (++core.ubBuffers > kMaxBuffers) {
        Fail("too many buffers", std::string(what) + ": buffer " + Str(core.ubBuffers) + " of one kernel; AscendC allows " +
                                     Str(kMaxBuffers));
    }
    uint8_t* p = core.ub + core.ubUsed;
    core.ubUsed += aligned;
    return p;
}

}  // namespace twin

#include "twin_pipes.h"

namespace AscendC {

enum class TPosition { GM, A1, A2, B1, B2, C1, C2, CO1, CO2, VECIN, VECOUT, VECCALC, MAX };
using QuePosition = TPosition;

enum class RoundMode { CAST_NONE = 0, CAST_RINT, CAST_FLOOR, CAST_CEIL, CAST_ROUND, CAST_TRUNC, CAST_ODD };
enum class CMPMODE : uint8_t { LT = 0, GT, EQ, LE, GE, NE };
enum class SELMODE : uint8_t { VSEL_CMPMASK_SPR = 0, VSEL_TENSOR_SCALAR_MODE, VSEL_TENSOR_TENSOR_MODE };

inline int64_t GetBlockIdx() { return twin::Core().blockIdx; }
inline int64_t GetBlockNum() { return twin::Core().launch->blockDim; }

// The twin runs every pipe in program order; the pipe model (twin_pipes.h)
// records what a barrier or an event pair orders, to find the missing ones.
template <pipe_t pipe>
inline void PipeBarrier() {
    if constexpr (pipe == PIPE_ALL) {
        twin::Pipes().BarrierAll();
        if (twin::TimeTrace* t = twin::Trace()) t->BarrierAll();
    } else if constexpr (pipe == PIPE_V) {
        twin::Pipes().BarrierVector();  // orders vector reads after vector writes (twin_pipes.h)
    }
}

enum class HardEvent { MTE2_V, V_MTE2, V_MTE3, MTE3_V, MTE2_MTE3, MTE3_MTE2, MTE2_S, S_MTE2, V_S, S_V, MTE3_S, S_MTE3 };
using TEventID = int8_t;

namespace twin_detail {
constexpr uint8_t PipeOf(pipe_t p) {
    return p == PIPE_S ? twin::kPipeS : p == PIPE_V ? twin::kPipeV : p == PIPE_MTE2 ? twin::kPipeMte2
         : p == PIPE_MTE3 ? twin::kPipeMte3 : twin::kPipeNone;
}
struct EventPipes { uint8_t from, to; };
// The timing model's side of an event pair (pipes outside S, V, MTE2, MTE3 are not timed).
inline void TimeSet(uint8_t from, uint8_t to, int id) {
    twin::TimeTrace* t = twin::Trace();
    if (t && from < twin::kPipeCount && to < twin::kPipeCount) t->SetFlag(from, to, id);
}
inline void TimeWait(uint8_t from, uint8_t to, int id) {
    twin::TimeTrace* t = twin::Trace();
    if (t && from < twin::kPipeCount && to < twin::kPipeCount) t->WaitFlag(from, to, id);
}
constexpr EventPipes PipesOf(HardEvent e) {
    switch (e) {
        case HardEvent::MTE2_V: return {twin::kPipeMte2, twin::kPipeV};
        case HardEvent::V_MTE2: return {twin::kPipeV, twin::kPipeMte2};
        case HardEvent::V_MTE3: return {twin::kPipeV, twin::kPipeMte3};
        case HardEvent::MTE3_V: return {twin::kPipeMte3, twin::kPipeV};
        case HardEvent::MTE2_MTE3: return {twin::kPipeMte2, twin::kPipeMte3};
        case HardEvent::MTE3_MTE2: return {twin::kPipeMte3, twin::kPipeMte2};
        case HardEvent::MTE2_S: return {twin::kPipeMte2, twin::kPipeS};
        case HardEvent::S_MTE2: return {twin::kPipeS, twin::kPipeMte2};
        case HardEvent::V_S: return {twin::kPipeV, twin::kPipeS};
        case HardEvent::S_V: return {twin::kPipeS, twin::kPipeV};
        case HardEvent::MTE3_S: return {twin::kPipeMte3, twin::kPipeS};
        case HardEvent::S_MTE3: return {twin::kPipeS, twin::kPipeMte3};
    }
    return {twin::kPipeNone, twin::kPipeNone};
}
}  // namespace twin_detail

// Event pair between two pipes: `from`'s accesses before SetFlag are ordered
// before `to`'s after the matching WaitFlag.
template <HardEvent event>
inline void SetFlag(int32_t id) {
    constexpr twin_detail::EventPipes e = twin_detail::PipesOf(event);
    twin::Pipes().Set(e.from, e.to, id);
    twin_detail::TimeSet(e.from, e.to, id);
}
template <HardEvent event>
inline void WaitFlag(int32_t id) {
    constexpr twin_detail::EventPipes e = twin_detail::PipesOf(event);
    twin::Pipes().Wait(e.from, e.to, id);
    twin_detail::TimeWait(e.from, e.to, id);
}

template <pipe_t src, pipe_t dst>
class TQueSync {
public:
    void SetFlag(TEventID id) {
        twin::Pipes().Set(twin_detail::PipeOf(src), twin_detail::PipeOf(dst), id);
        twin_detail::TimeSet(twin_detail::PipeOf(src), twin_detail::PipeOf(dst), id);
    }
    void WaitFlag(TEventID id) {
        twin::Pipes().Wait(twin_detail::PipeOf(src), twin_detail::PipeOf(dst), id);
        twin_detail::TimeWait(twin_detail::PipeOf(src), twin_detail::PipeOf(dst), id);
    }
};

// Hardware SyncAll: the launch-stub generator passes the cross-core sync
// address only to MIX kernels; in an AIV-only kernel it hangs or fails.
template <bool isAIVOnly = true>
inline void SyncAll() {
    twin::CoreContext& core = twin::Core();
    if (core.kernelType != KERNEL_TYPE_MIX_AIV_1_0) {
        twin::Fail("SyncAll needs MIX", "hardware SyncAll() in a kernel without "
                                        "KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIV_1_0)");
    }
    core.launch->barrier.Wait();
    if (twin::TimeTrace* t = twin::Trace()) t->SyncAll();
}

// ---------------------------------------------------------------- tensors
template <typename T>
class LocalTensor {
public:
    LocalTensor() = default;
    LocalTensor(T* addr, uint64_t size, twin::Slot* slot) : addr_(addr), size_(size), slot_(slot) {}

    T GetValue(uint64_t i) const {
        CheckIndex(i);
        twin::PipeRead("GetValue", twin::kPipeS, addr_ + i, sizeof(T));
        twin::TimeScalarUb();
        T v;
        std::memcpy(&v, addr_ + i, sizeof(T));
        return v;
    }
    void SetValue(uint64_t i, T v) const {
        CheckIndex(i);
        twin::PipeWrite("SetValue", twin::kPipeS, addr_ + i, sizeof(T));
        twin::TimeScalarUb();
        std::memcpy(addr_ + i, &v, sizeof(T));
    }
    LocalTensor operator[](uint64_t offset) const {
        if (offset > size_) twin::Fail("UB out of bounds", "LocalTensor offset " + twin::Str(offset) + " > size " + twin::Str(size_));
        return LocalTensor(addr_ + offset, size_ - offset, slot_);
    }
    template <typename U>
    LocalTensor<U> ReinterpretCast() const {
        return LocalTensor<U>(reinterpret_cast<U*>(addr_), size_ * sizeof(T) / sizeof(U), slot_);
    }
    uint64_t GetSize() const { return size_; }
    T* GetPhyAddr() const { return addr_; }
    twin::Slot* TwinSlot() const { return slot_; }

private:
    void CheckIndex(uint64_t i) const {
        if (addr_ == nullptr || i >= size_) {
            twin::Fail("UB out of bounds", "LocalTensor index " + twin::Str(i) + " of a tensor of " + twin::Str(size_));
        }
    }
    T* addr_ = nullptr;
    uint64_t size_ = 0;
    twin::Slot* slot_ = nullptr;
};

template <typename T>
class GlobalTensor {
public:
    void SetGlobalBuffer(__gm__ T* buffer, uint64_t size) {
        buf_ = twin::FindGm(buffer, size * sizeof(T));
        if (buf_ == nullptr) {
            twin::Fail("GM out of bounds", "SetGlobalBuffer of " + twin::Str(size * sizeof(T)) +
                                               " bytes is not inside one launch argument");
        }
        addr_ = buffer;
        size_ = size;
    }
    T GetValue(uint64_t i) const {
        Check(i, 1, "GlobalTensor::GetValue");
        buf_->read += sizeof(T);
        twin::RecordBursts(buf_, sizeof(T), 1, true);
        twin::TimeScalarGm();
        T v;
        std::memcpy(&v, addr_ + i, sizeof(T));
        return v;
    }
    void SetValue(uint64_t i, T v) const {
        Check(i, 1, "GlobalTensor::SetValue");
        buf_->written += sizeof(T);
        twin::RecordBursts(buf_, sizeof(T), 1, true);
        twin::TimeScalarGm();
        std::memcpy(addr_ + i, &v, sizeof(T));
    }
    GlobalTensor operator[](uint64_t offset) const {
        GlobalTensor g(*this);
        if (offset > size_) twin::Fail("GM out of bounds", "GlobalTensor offset " + twin::Str(offset) + " > size " + twin::Str(size_));
        g.addr_ += offset;
        g.size_ -= offset;
        return g;
    }
    __gm__ T* GetPhyAddr() const { return addr_; }
    uint64_t GetSize() const { return size_; }

    // Twin only: bounds check of [offsetElems, +countElems) and the buffer for counting.
    twin::GmBuffer* Check(uint64_t offset, uint64_t count, const char* op) const {
        if (buf_ == nullptr) twin::Fail("GM out of bounds", std::string(op) + " on a GlobalTensor without SetGlobalBuffer");
        if (offset + count > size_) {
            twin::Fail("GM out of bounds", std::string(op) + " touches elements [" + twin::Str(offset) + ", " +
                                               twin::Str(offset + count) + ") of a GlobalTensor of " + twin::Str(size_));
        }
        return buf_;
    }

private:
    T* addr_ = nullptr;
    uint64_t size_ = 0;
    twin::GmBuffer* buf_ = nullptr;
};

// Software SyncAll: every core flags its 32-byte slot of gmWorkspace and polls
// all of them, so the area must be zero when the launch starts (zeroed by the
// host) and hold GetBlockNum() slots; ubWorkspace one slot per core too.
template <bool isAIVOnly = true>
inline void SyncAll(const GlobalTensor<int32_t>& gmWorkspace, const LocalTensor<int32_t>& ubWorkspace,
                    const int32_t usedCores = 0) {
    twin::CoreContext& core = twin::Core();
    const uint32_t cores = usedCores > 0 ? static_cast<uint32_t>(usedCores) : core.launch->blockDim;
    const uint64_t need = uint64_t(cores) * twin::kBlockBytes / sizeof(int32_t);
    twin::GmBuffer* buf = gmWorkspace.Check(0, need, "SyncAll");
    if (!buf->zeroAtLaunch) {
        twin::Fail("SyncAll workspace", "software SyncAll on GM buffer '" + buf->name +
                                            "' that was not zeroed before the launch");
    }
    if (ubWorkspace.GetSize() < need) {
        twin::Fail("SyncAll workspace", "ubWorkspace of " + twin::Str(ubWorkspace.GetSize()) + " int32, needs " +
                                            twin::Str(need));
    }
    core.launch->barrier.Wait();
    if (twin::TimeTrace* t = twin::Trace()) t->SyncAll();
}

// ---------------------------------------------------------------- memory management
template <TPosition pos, int32_t depth>
class TQue {
public:
    TQue() = default;
    TQue(const TQue&) = delete;
    ~TQue() {
        if (!twin::InKernel()) return;
        int pending = 0;
        for (auto& s : slots_) pending += s.state != twin::Slot::FREE;
        if (pending) {
            twin::Defer("queue imbalance", std::to_string(pending) +
                                               " TQue buffer(s) still allocated or queued at kernel end (missing DeQue/FreeTensor)");
        }
    }

    // As AscendC does, the buffers are tried round-robin from the one after
    // the last allocated: with BUFFER_NUM 2 an alloc / free per tile takes
    // the two buffers in turn (which is what lets tile i + 1 move in while
    // tile i is computed; the timing model depends on it).
    template <typename T>
    LocalTensor<T> AllocTensor() {
        for (size_t probe = 0; probe < slots_.size(); ++probe) {
            twin::Slot& s = slots_[cursor_];
            cursor_ = (cursor_ + 1) % slots_.size();
            if (s.state == twin::Slot::FREE) {
                s.state = twin::Slot::ALLOCATED;
                twin::PipeHandOff(s.addr, s.bytes);  // FreeTensor -> AllocTensor: the consumer is done with it
                return LocalTensor<T>(reinterpret_cast<T*>(s.addr), s.bytes / sizeof(T), &s);
            }
        }
        twin::Fail("queue imbalance", "AllocTensor with all " + std::to_string(slots_.size()) +
                                          " buffers of the TQue in use (missing FreeTensor)");
    }
    template <typename T>
    bool EnQue(const LocalTensor<T>& tensor) {
        twin::Slot* s = Own(tensor.TwinSlot(), "EnQue");
        if (s->state != twin::Slot::ALLOCATED) twin::Fail("queue imbalance", "EnQue of a tensor that is not freshly allocated");
        s->state = twin::Slot::QUEUED;
        fifo_.push_back(s);
        return true;
    }
    template <typename T>
    LocalTensor<T> DeQue() {
        if (fifo_.empty()) twin::Fail("queue imbalance", "DeQue on an empty TQue (missing EnQue)");
        twin::Slot* s = fifo_.front();
        fifo_.pop_front();
        s->state = twin::Slot::DEQUEUED;
        twin::PipeHandOff(s->addr, s->bytes);  // EnQue -> DeQue: the producer is done with it
        return LocalTensor<T>(reinterpret_cast<T*>(s->addr), s->bytes / sizeof(T), s);
    }
    template <typename T>
    void FreeTensor(LocalTensor<T>& tensor) {
        twin::Slot* s = Own(tensor.TwinSlot(), "FreeTensor");
        if (s->state == twin::Slot::FREE) twin::Fail("queue imbalance", "FreeTensor of a tensor that is already free");
        if (s->state == twin::Slot::QUEUED) twin::Fail("queue imbalance", "FreeTensor of a tensor still in the queue (missing DeQue)");
        s->state = twin::Slot::FREE;
    }

    // Twin only: called by TPipe::InitBuffer.
    void TwinInit(uint8_t num, uint32_t len) {
        if (!slots_.empty()) twin::Fail("queue imbalance", "InitBuffer called twice on one TQue");
        if (num == 0 || num > 8) twin::Fail("queue imbalance", "TQue InitBuffer with " + std::to_string(num) + " buffers (1..8)");
        slots_.resize(num);
        for (auto& s : slots_) {
            s.addr = twin::AllocUb(len, "TQue InitBuffer");
            s.bytes = len;
        }
    }

private:
    twin::Slot* Own(twin::Slot* s, const char* op) {
        for (auto& mine : slots_) {
            if (&mine == s) return s;
        }
        twin::Fail("queue imbalance", std::string(op) + " of a tensor that does not belong to this TQue");
    }
    std::vector<twin::Slot> slots_;
    size_t cursor_ = 0;  // the buffer AllocTensor tries first
    std::deque<twin::Slot*> fifo_;
};

template <TPosition pos = TPosition::VECCALC>
class TBuf {
public:
    template <typename T>
    LocalTensor<T> Get() const {
        if (slot_.addr == nullptr) twin::Fail("UB out of bounds", "TBuf::Get before InitBuffer");
        return LocalTensor<T>(reinterpret_cast<T*>(slot_.addr), slot_.bytes / sizeof(T), nullptr);
    }
    template <typename T>
    LocalTensor<T> Get(uint32_t len) const {
        if (uint64_t(len) * sizeof(T) > slot_.bytes) twin::Fail("UB out of bounds", "TBuf::Get(" + std::to_string(len) + ") larger than the buffer");
        return LocalTensor<T>(reinterpret_cast<T*>(slot_.addr), len, nullptr);
    }
    void TwinInit(uint32_t len) {
        slot_.addr = twin::AllocUb(len, "TBuf InitBuffer");
        slot_.bytes = len;
    }

private:
    twin::Slot slot_;
};

class TPipe;
namespace twin_detail {
inline TPipe*& CurrentPipe() {
    thread_local TPipe* pipe = nullptr;
    return pipe;
}
}  // namespace twin_detail

class TPipe {
public:
    TPipe() {
        twin::Core().ubUsed = 0;
        twin::Core().ubBuffers = 0;
        twin_detail::CurrentPipe() = this;
    }
    ~TPipe() {
        if (twin_detail::CurrentPipe() == this) twin_detail::CurrentPipe() = nullptr;
    }
    template <TPosition pos, int32_t depth>
    void InitBuffer(TQue<pos, depth>& que, uint8_t num, uint32_t len) { que.TwinInit(num, len); }
    template <TPosition pos>
    void InitBuffer(TBuf<pos>& buf, uint32_t len) { buf.TwinInit(len); }
    void Destroy() {}
    // Event ids: the twin keeps one flag per pipe pair and id; any id 0..7 serves.
    TEventID FetchEventID(HardEvent) { return 0; }
    template <HardEvent event>
    TEventID FetchEventID() { return 0; }
};

// The kernel's TPipe (the one constructed last on this core), as in AscendC.
inline TPipe* GetTPipePtr() {
    TPipe* p = twin_detail::CurrentPipe();
    if (p == nullptr) twin::Fail("no TPipe", "GetTPipePtr() before a TPipe was constructed");
    return p;
}

}  // namespace AscendC

#include "twin_copy.h"
#include "twin_vector.h"

#endif  // NPU_SYNCBN_TWIN_KERNEL_OPERATOR_H

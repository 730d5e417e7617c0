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

namespace AscendC {

enum class TPosition { GM, A1, A2, B1, B2, C1, C2, CO1, CO2, VECIN, VECOUT, VECCALC, MAX };
using QuePosition = TPosition;

enum class RoundMode { CAST_NONE = 0, CAST_RINT, CAST_FLOOR, CAST_CEIL, CAST_ROUND, CAST_TRUNC, CAST_ODD };

inline int64_t GetBlockIdx() { return twin::Core().blockIdx; }
inline int64_t GetBlockNum() { return twin::Core().launch->blockDim; }

template <pipe_t pipe>
inline void PipeBarrier() {}  // the twin executes every pipe in program order

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
}

// ---------------------------------------------------------------- tensors
template <typename T>
class LocalTensor {
public:
    LocalTensor() = default;
    LocalTensor(T* addr, uint64_t size, twin::Slot* slot) : addr_(addr), size_(size), slot_(slot) {}

    T GetValue(uint64_t i) const {
        CheckIndex(i);
        T v;
        std::memcpy(&v, addr_ + i, sizeof(T));
        return v;
    }
    void SetValue(uint64_t i, T v) const {
        CheckIndex(i);
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
        T v;
        std::memcpy(&v, addr_ + i, sizeof(T));
        return v;
    }
    void SetValue(uint64_t i, T v) const {
        Check(i, 1, "GlobalTensor::SetValue");
        buf_->written += sizeof(T);
        twin::RecordBursts(buf_, sizeof(T), 1, true);
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

    template <typename T>
    LocalTensor<T> AllocTensor() {
        for (auto& s : slots_) {
            if (s.state == twin::Slot::FREE) {
                s.state = twin::Slot::ALLOCATED;
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

class TPipe {
public:
    TPipe() {
        twin::Core().ubUsed = 0;
        twin::Core().ubBuffers = 0;
    }
    template <TPosition pos, int32_t depth>
    void InitBuffer(TQue<pos, depth>& que, uint8_t num, uint32_t len) { que.TwinInit(num, len); }
    template <TPosition pos>
    void InitBuffer(TBuf<pos>& buf, uint32_t len) { buf.TwinInit(len); }
    void Destroy() {}
};

// ---------------------------------------------------------------- data movement
struct DataCopyParams {
    DataCopyParams() = default;
    DataCopyParams(uint16_t count, uint16_t len, uint16_t srcStrideIn, uint16_t dstStrideIn)
        : blockCount(count), blockLen(len), srcStride(srcStrideIn), dstStride(dstStrideIn) {}
    uint16_t blockCount = 1;
    uint16_t blockLen = 0;   // in 32-byte blocks
    uint16_t srcStride = 0;  // gap between blocks, in 32-byte blocks
    uint16_t dstStride = 0;
};

struct DataCopyExtParams {
    DataCopyExtParams() = default;
    DataCopyExtParams(uint16_t count, uint32_t len, uint32_t srcStrideIn, uint32_t dstStrideIn, uint32_t rsvIn)
        : blockCount(count), blockLen(len), srcStride(srcStrideIn), dstStride(dstStrideIn), rsv(rsvIn) {}
    uint16_t blockCount = 1;
    uint32_t blockLen = 0;   // bytes
    uint32_t srcStride = 0;  // gap: bytes on GM, 32-byte blocks on UB
    uint32_t dstStride = 0;
    uint32_t rsv = 0;
};

template <typename T>
struct DataCopyPadExtParams {
    DataCopyPadExtParams() = default;
    DataCopyPadExtParams(bool isPadIn, uint8_t left, uint8_t right, T value)
        : isPad(isPadIn), leftPadding(left), rightPadding(right), paddingValue(value) {}
    bool isPad = false;
    uint8_t leftPadding = 0;  // elements
    uint8_t rightPadding = 0;
    T paddingValue{};
};

namespace twin_detail {
// Checks of a contiguous DataCopy of `count` elements, either way: whole 32-byte
// blocks, the UB side aligned and large enough. Returns the bytes moved.
template <typename T>
inline uint64_t CheckContiguousCopy(const LocalTensor<T>& ub, uint32_t count) {
    const uint64_t bytes = uint64_t(count) * sizeof(T);
    if (bytes % twin::kBlockBytes != 0) {
        twin::Fail("misaligned DataCopy", std::to_string(bytes) + " bytes is not a multiple of 32 (use DataCopyPad for tails)");
    }
    twin::CheckUbAligned("DataCopy", ub.GetPhyAddr());
    twin::CheckCount("DataCopy", count, ub.GetSize());
    return bytes;
}

// Element steps of a strided DataCopy: blocks of blockLen 32-byte blocks, strides in 32-byte blocks.
struct BlockSteps {
    uint64_t len, srcStep, dstStep;
};

template <typename T>
inline BlockSteps StepsOf(const DataCopyParams& p) {
    const uint64_t len = uint64_t(p.blockLen) * twin::kBlockBytes / sizeof(T);
    return {len, len + uint64_t(p.srcStride) * twin::kBlockBytes / sizeof(T),
            len + uint64_t(p.dstStride) * twin::kBlockBytes / sizeof(T)};
}

// blockCount 1..4095 and blockLen >= 1 (the fields are 16-bit: a larger value
// the kernel cast down has already wrapped, which the range often catches).
inline void CheckCopyParams(const DataCopyParams& p) {
    if (p.blockCount < 1 || p.blockCount > 4095 || p.blockLen < 1) {
        twin::Fail("bad DataCopyParams", "blockCount " + std::to_string(p.blockCount) + " (1..4095), blockLen " +
                                             std::to_string(p.blockLen) + " (>= 1 block)");
    }
}

template <typename T>
inline void CopyBlocks(T* dst, const T* src, uint32_t blockCount, const BlockSteps& s) {
    for (uint32_t b = 0; b < blockCount; ++b) std::memcpy(dst + b * s.dstStep, src + b * s.srcStep, s.len * sizeof(T));
}
}  // namespace twin_detail

template <typename T>
inline void DataCopy(const LocalTensor<T>& dst, const GlobalTensor<T>& src, uint32_t count) {
    const uint64_t bytes = twin_detail::CheckContiguousCopy(dst, count);
    twin::GmBuffer* buf = src.Check(0, count, "DataCopy");
    buf->read += bytes;
    twin::RecordBursts(buf, bytes, 1, true);
    std::memcpy(dst.GetPhyAddr(), src.GetPhyAddr(), bytes);
}

template <typename T>
inline void DataCopy(const GlobalTensor<T>& dst, const LocalTensor<T>& src, uint32_t count) {
    const uint64_t bytes = twin_detail::CheckContiguousCopy(src, count);
    twin::GmBuffer* buf = dst.Check(0, count, "DataCopy");
    buf->written += bytes;
    twin::RecordBursts(buf, bytes, 1, true);
    std::memcpy(dst.GetPhyAddr(), src.GetPhyAddr(), bytes);
}

// Strided block copy GM -> UB: blockCount blocks of blockLen 32-byte blocks.
template <typename T>
inline void DataCopy(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const DataCopyParams& p) {
    twin::CheckUbAligned("DataCopy", dst.GetPhyAddr());
    twin_detail::CheckCopyParams(p);
    const twin_detail::BlockSteps s = twin_detail::StepsOf<T>(p);
    twin::CheckCount("DataCopy", (p.blockCount - 1) * s.dstStep + s.len, dst.GetSize());
    twin::GmBuffer* buf = src.Check(0, (p.blockCount - 1) * s.srcStep + s.len, "DataCopy");
    twin_detail::CopyBlocks(dst.GetPhyAddr(), src.GetPhyAddr(), p.blockCount, s);
    buf->read += p.blockCount * s.len * sizeof(T);
    twin::RecordBursts(buf, s.len * sizeof(T), p.blockCount, p.srcStride == 0 && p.dstStride == 0);
}

template <typename T>
inline void DataCopy(const GlobalTensor<T>& dst, const LocalTensor<T>& src, const DataCopyParams& p) {
    twin::CheckUbAligned("DataCopy", src.GetPhyAddr());
    twin_detail::CheckCopyParams(p);
    const twin_detail::BlockSteps s = twin_detail::StepsOf<T>(p);
    twin::CheckCount("DataCopy", (p.blockCount - 1) * s.srcStep + s.len, src.GetSize());
    twin::GmBuffer* buf = dst.Check(0, (p.blockCount - 1) * s.dstStep + s.len, "DataCopy");
    twin_detail::CopyBlocks(dst.GetPhyAddr(), src.GetPhyAddr(), p.blockCount, s);
    buf->written += p.blockCount * s.len * sizeof(T);
    twin::RecordBursts(buf, s.len * sizeof(T), p.blockCount, p.srcStride == 0 && p.dstStride == 0);
}

namespace twin_detail {
inline void CheckPadParams(uint32_t blockCount, uint32_t blockLen, uint32_t elem) {
    if (blockCount < 1 || blockCount > 4095) twin::Fail("bad DataCopyPad", "blockCount " + std::to_string(blockCount) + " outside 1..4095");
    if (blockLen == 0 || blockLen % elem != 0) twin::Fail("bad DataCopyPad", "blockLen " + std::to_string(blockLen) + " bytes is not a positive multiple of the element size");
}
}  // namespace twin_detail

// Unaligned copy GM -> UB: every block lands 32-byte aligned in UB; left/right
// padding elements get paddingValue when isPad, the rest of the last 32-byte
// block is left undefined (poisoned here).
template <typename T>
inline void DataCopyPad(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const DataCopyExtParams& p,
                        const DataCopyPadExtParams<T>& pad) {
    twin_detail::CheckPadParams(p.blockCount, p.blockLen, sizeof(T));
    twin::CheckUbAligned("DataCopyPad", dst.GetPhyAddr());
    if ((pad.leftPadding + 0u) * sizeof(T) > 32 || (pad.rightPadding + 0u) * sizeof(T) > 32) {
        twin::Fail("bad DataCopyPad", "padding wider than 32 bytes");
    }
    const uint64_t len = p.blockLen / sizeof(T);
    const uint64_t used = pad.leftPadding + len + pad.rightPadding;
    const uint64_t epb = twin::kBlockBytes / sizeof(T);
    const uint64_t dstStep = (used + epb - 1) / epb * epb + uint64_t(p.dstStride) * epb;
    const uint64_t srcStep = len + p.srcStride / sizeof(T);
    if (p.srcStride % sizeof(T) != 0) twin::Fail("bad DataCopyPad", "GM srcStride not a multiple of the element size");
    twin::CheckCount("DataCopyPad", (p.blockCount - 1) * dstStep + (used + epb - 1) / epb * epb, dst.GetSize());
    twin::GmBuffer* buf = src.Check(0, (p.blockCount - 1) * srcStep + len, "DataCopyPad");
    for (uint32_t b = 0; b < p.blockCount; ++b) {
        T* row = dst.GetPhyAddr() + b * dstStep;
        std::memset(static_cast<void*>(row), 0xFF, (used + epb - 1) / epb * epb * sizeof(T));
        if (pad.isPad) {
            for (uint32_t i = 0; i < pad.leftPadding; ++i) row[i] = pad.paddingValue;
            for (uint32_t i = 0; i < pad.rightPadding; ++i) row[pad.leftPadding + len + i] = pad.paddingValue;
        }
        std::memcpy(row + pad.leftPadding, src.GetPhyAddr() + b * srcStep, len * sizeof(T));
    }
    buf->read += uint64_t(p.blockCount) * p.blockLen;
    twin::RecordBursts(buf, p.blockLen, p.blockCount, p.srcStride == 0 && dstStep == len);
}

// Unaligned copy UB -> GM: blocks are read 32-byte aligned from UB (srcStride in
// 32-byte blocks), exactly blockLen bytes each are written (dstStride in bytes).
template <typename T>
inline void DataCopyPad(const GlobalTensor<T>& dst, const LocalTensor<T>& src, const DataCopyExtParams& p) {
    twin_detail::CheckPadParams(p.blockCount, p.blockLen, sizeof(T));
    twin::CheckUbAligned("DataCopyPad", src.GetPhyAddr());
    const uint64_t len = p.blockLen / sizeof(T);
    const uint64_t epb = twin::kBlockBytes / sizeof(T);
    const uint64_t srcStep = (len + epb - 1) / epb * epb + uint64_t(p.srcStride) * epb;
    if (p.dstStride % sizeof(T) != 0) twin::Fail("bad DataCopyPad", "GM dstStride not a multiple of the element size");
    const uint64_t dstStep = len + p.dstStride / sizeof(T);
    twin::CheckCount("DataCopyPad", (p.blockCount - 1) * srcStep + len, src.GetSize());
    twin::GmBuffer* buf = dst.Check(0, (p.blockCount - 1) * dstStep + len, "DataCopyPad");
    for (uint32_t b = 0; b < p.blockCount; ++b) {
        std::memcpy(dst.GetPhyAddr() + b * dstStep, src.GetPhyAddr() + b * srcStep, len * sizeof(T));
    }
    buf->written += uint64_t(p.blockCount) * p.blockLen;
    twin::RecordBursts(buf, p.blockLen, p.blockCount, p.dstStride == 0 && srcStep == len);
}

// ---------------------------------------------------------------- vector math (level-2: first `count` elements)
namespace twin_detail {
template <typename T>
inline void CheckOperand(const char* op, const LocalTensor<T>& t, int32_t count) {
    twin::CheckUbAligned(op, t.GetPhyAddr());
    twin::CheckCount(op, count, t.GetSize());
}
template <typename T, typename F>
inline void Binary(const char* op, const LocalTensor<T>& dst, const LocalTensor<T>& a, const LocalTensor<T>& b,
                   int32_t count, F f) {
    static_assert(std::is_arithmetic<T>::value, "twin vector math works on float / integer tensors");
    CheckOperand(op, dst, count);
    CheckOperand(op, a, count);
    CheckOperand(op, b, count);
    T* d = dst.GetPhyAddr();
    const T *x = a.GetPhyAddr(), *y = b.GetPhyAddr();
    for (int32_t i = 0; i < count; ++i) d[i] = f(x[i], y[i]);
}
template <typename T, typename F>
inline void Unary(const char* op, const LocalTensor<T>& dst, const LocalTensor<T>& a, int32_t count, F f) {
    static_assert(std::is_arithmetic<T>::value, "twin vector math works on float / integer tensors");
    CheckOperand(op, dst, count);
    CheckOperand(op, a, count);
    T* d = dst.GetPhyAddr();
    const T* x = a.GetPhyAddr();
    for (int32_t i = 0; i < count; ++i) d[i] = f(x[i]);
}
}  // namespace twin_detail

template <typename T>
inline void Add(const LocalTensor<T>& d, const LocalTensor<T>& a, const LocalTensor<T>& b, const int32_t& n) {
    twin_detail::Binary("Add", d, a, b, n, [](T x, T y) { return T(x + y); });
}
template <typename T>
inline void Sub(const LocalTensor<T>& d, const LocalTensor<T>& a, const LocalTensor<T>& b, const int32_t& n) {
    twin_detail::Binary("Sub", d, a, b, n, [](T x, T y) { return T(x - y); });
}
template <typename T>
inline void Mul(const LocalTensor<T>& d, const LocalTensor<T>& a, const LocalTensor<T>& b, const int32_t& n) {
    twin_detail::Binary("Mul", d, a, b, n, [](T x, T y) { return T(x * y); });
}
template <typename T>
inline void Div(const LocalTensor<T>& d, const LocalTensor<T>& a, const LocalTensor<T>& b, const int32_t& n) {
    twin_detail::Binary("Div", d, a, b, n, [](T x, T y) { return T(x / y); });
}
template <typename T>
inline void Adds(const LocalTensor<T>& d, const LocalTensor<T>& a, const T& s, const int32_t& n) {
    twin_detail::Unary("Adds", d, a, n, [s](T x) { return T(x + s); });
}
template <typename T>
inline void Muls(const LocalTensor<T>& d, const LocalTensor<T>& a, const T& s, const int32_t& n) {
    twin_detail::Unary("Muls", d, a, n, [s](T x) { return T(x * s); });
}
template <typename T>
inline void Maxs(const LocalTensor<T>& d, const LocalTensor<T>& a, const T& s, const int32_t& n) {
    twin_detail::Unary("Maxs", d, a, n, [s](T x) { return x > s ? x : s; });
}
template <typename T>
inline void Sqrt(const LocalTensor<T>& d, const LocalTensor<T>& a, const int32_t& n) {
    twin_detail::Unary("Sqrt", d, a, n, [](T x) { return T(std::sqrt(x)); });
}
template <typename T>
inline void Rsqrt(const LocalTensor<T>& d, const LocalTensor<T>& a, const int32_t& n) {
    twin_detail::Unary("Rsqrt", d, a, n, [](T x) { return T(T(1) / std::sqrt(x)); });
}
template <typename T>
inline void Duplicate(const LocalTensor<T>& d, const T& s, const int32_t& n) {
    twin::CheckUbAligned("Duplicate", d.GetPhyAddr());
    twin::CheckCount("Duplicate", n, d.GetSize());
    T* p = d.GetPhyAddr();
    for (int32_t i = 0; i < n; ++i) p[i] = s;
}

// Level-0 form: repeatTime repeats of 256 bytes, `mask` elements of each
// (contiguous, strides 1 / 8 only). repeatTime is a uint8_t in AscendC: the
// twin takes it wider so that a count above 255, which would wrap, is an error.
template <typename T>
inline void Duplicate(const LocalTensor<T>& d, const T& s, uint64_t mask, int32_t repeatTime,
                      uint16_t dstBlockStride, int32_t dstRepeatStride) {
    if (repeatTime < 0 || repeatTime > 255) {
        twin::Fail("repeat over 255", "Duplicate with repeatTime " + std::to_string(repeatTime) + " (uint8_t: 0..255)");
    }
    const uint64_t perRepeat = 256 / sizeof(T);
    if (mask > perRepeat || dstBlockStride != 1 || dstRepeatStride != 8) {
        twin::Fail("unsupported Duplicate", "the twin's level-0 Duplicate takes mask <= one repeat, strides 1 / 8");
    }
    twin::CheckUbAligned("Duplicate", d.GetPhyAddr());
    twin::CheckCount("Duplicate", static_cast<int64_t>(repeatTime * perRepeat), d.GetSize());
    T* p = d.GetPhyAddr();
    for (int32_t r = 0; r < repeatTime; ++r) {
        for (uint64_t i = 0; i < mask; ++i) p[r * perRepeat + i] = s;
    }
}

// Scalar conversions of bfloat16_t, as AscendC names them (a plain cast is the
// "scalar bf16 cast" rule of twin_half.h).
inline float ToFloat(const bfloat16_t& v) { return v.ToFloat(); }
inline bfloat16_t ToBfloat16(const float& v) { return bfloat16_t::FromFloat(v); }

// Precision conversion; float -> 16-bit rounds to nearest even (CAST_RINT /
// CAST_NONE), widening is exact.
template <typename D, typename S>
inline void Cast(const LocalTensor<D>& dst, const LocalTensor<S>& src, const RoundMode& mode, const uint32_t& n) {
    twin::CheckUbAligned("Cast", dst.GetPhyAddr());
    twin::CheckUbAligned("Cast", src.GetPhyAddr());
    twin::CheckCount("Cast", n, dst.GetSize());
    twin::CheckCount("Cast", n, src.GetSize());
    if (!std::is_same<D, float>::value && mode != RoundMode::CAST_RINT && mode != RoundMode::CAST_NONE) {
        twin::Fail("unsupported Cast", "the twin narrows with CAST_RINT / CAST_NONE only");
    }
    D* d = dst.GetPhyAddr();
    const S* s = src.GetPhyAddr();
    for (uint32_t i = 0; i < n; ++i) d[i] = twin::FromFloat<D>(twin::AsFloat(s[i]));
}

// Sum of the first `count` floats into dst[0]: pairwise within each 256-byte
// repeat, repeats added in order (the documented "first n elements" mode).
// work and dst must each hold one element per repeat, rounded up to a 32-byte
// block: the twin writes the per-repeat partials to dst before the total, the
// worst case of what 910B's vcadd may do there (see host/tiling.cpp).
template <typename T>
inline void ReduceSum(const LocalTensor<T>& dst, const LocalTensor<T>& src, const LocalTensor<T>& work,
                      const int32_t count) {
    static_assert(std::is_same<T, float>::value, "twin ReduceSum supports float");
    twin_detail::CheckOperand("ReduceSum", src, count);
    const int32_t perRepeat = 256 / sizeof(T);
    const int32_t repeats = (count + perRepeat - 1) / perRepeat;
    const int32_t need = std::max<int32_t>((repeats + 7) / 8 * 8, 8);
    twin::CheckUbAligned("ReduceSum", work.GetPhyAddr());
    twin::CheckUbAligned("ReduceSum", dst.GetPhyAddr());
    if (work.GetSize() < uint64_t(need)) {
        twin::Fail("UB out of bounds", "ReduceSum work tensor of " + twin::Str(work.GetSize()) + " elements, needs " + std::to_string(need));
    }
    if (dst.GetSize() < uint64_t(need)) {
        twin::Fail("UB out of bounds", "ReduceSum dst tensor of " + twin::Str(dst.GetSize()) + " elements, needs " +
                                           std::to_string(need) + " (one per 256-byte repeat)");
    }
    const T* s = src.GetPhyAddr();
    T total = 0;
    T lane[64];
    for (int32_t r = 0; r < repeats; ++r) {
        const int32_t n = std::min(perRepeat, count - r * perRepeat);
        for (int32_t i = 0; i < perRepeat; ++i) lane[i] = i < n ? s[r * perRepeat + i] : T(0);
        for (int32_t w = perRepeat / 2; w >= 1; w /= 2) {
            for (int32_t i = 0; i < w; ++i) lane[i] = lane[2 * i] + lane[2 * i + 1];
        }
        work.GetPhyAddr()[r] = lane[0];
        dst.GetPhyAddr()[r] = lane[0];
        total += lane[0];
    }
    dst.GetPhyAddr()[0] = total;
}

}  // namespace AscendC

#endif  // NPU_SYNCBN_TWIN_KERNEL_OPERATOR_H

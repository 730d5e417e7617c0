// Data movement of the CPU twin (see kernel_operator.h): DataCopy and
// DataCopyPad between GM and UB, with their alignment, range and bounds rules,
// GM byte counts, the pipe each side of a copy runs on (twin_pipes.h) and its
// shape for the timing model (twin_timing.h: bursts, GM address). In
// time-only mode the bytes themselves are not moved.
#ifndef NPU_SYNCBN_TWIN_COPY_H
#define NPU_SYNCBN_TWIN_COPY_H

namespace AscendC {

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
    twin::PipeWrite("DataCopy", twin::kPipeMte2, dst.GetPhyAddr(), bytes);
    twin::TimeCopy(twin::kPipeMte2, buf, src.GetPhyAddr(), bytes, 1, bytes, true);
    if (twin::MovesData()) std::memcpy(dst.GetPhyAddr(), src.GetPhyAddr(), bytes);
}

template <typename T>
inline void DataCopy(const GlobalTensor<T>& dst, const LocalTensor<T>& src, uint32_t count) {
    const uint64_t bytes = twin_detail::CheckContiguousCopy(src, count);
    twin::GmBuffer* buf = dst.Check(0, count, "DataCopy");
    buf->written += bytes;
    twin::RecordBursts(buf, bytes, 1, true);
    twin::PipeRead("DataCopy", twin::kPipeMte3, src.GetPhyAddr(), bytes);
    twin::TimeCopy(twin::kPipeMte3, buf, dst.GetPhyAddr(), bytes, 1, bytes, true);
    if (twin::MovesData()) std::memcpy(dst.GetPhyAddr(), src.GetPhyAddr(), bytes);
}

// Strided block copy GM -> UB: blockCount blocks of blockLen 32-byte blocks.
template <typename T>
inline void DataCopy(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const DataCopyParams& p) {
    twin::CheckUbAligned("DataCopy", dst.GetPhyAddr());
    twin_detail::CheckCopyParams(p);
    const twin_detail::BlockSteps s = twin_detail::StepsOf<T>(p);
    twin::CheckCount("DataCopy", (p.blockCount - 1) * s.dstStep + s.len, dst.GetSize());
    twin::GmBuffer* buf = src.Check(0, (p.blockCount - 1) * s.srcStep + s.len, "DataCopy");
    twin::PipeWrite("DataCopy", twin::kPipeMte2, dst.GetPhyAddr(), ((p.blockCount - 1) * s.dstStep + s.len) * sizeof(T));
    twin::TimeCopy(twin::kPipeMte2, buf, src.GetPhyAddr(), s.len * sizeof(T), p.blockCount, s.srcStep * sizeof(T),
                   p.srcStride == 0 && p.dstStride == 0);
    if (twin::MovesData()) twin_detail::CopyBlocks(dst.GetPhyAddr(), src.GetPhyAddr(), p.blockCount, s);
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
    twin::PipeRead("DataCopy", twin::kPipeMte3, src.GetPhyAddr(), ((p.blockCount - 1) * s.srcStep + s.len) * sizeof(T));
    twin::TimeCopy(twin::kPipeMte3, buf, dst.GetPhyAddr(), s.len * sizeof(T), p.blockCount, s.dstStep * sizeof(T),
                   p.srcStride == 0 && p.dstStride == 0);
    if (twin::MovesData()) twin_detail::CopyBlocks(dst.GetPhyAddr(), src.GetPhyAddr(), p.blockCount, s);
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
    twin::PipeWrite("DataCopyPad", twin::kPipeMte2, dst.GetPhyAddr(),
                    ((p.blockCount - 1) * dstStep + (used + epb - 1) / epb * epb) * sizeof(T));
    twin::TimeCopy(twin::kPipeMte2, buf, src.GetPhyAddr(), p.blockLen, p.blockCount, srcStep * sizeof(T),
                   p.srcStride == 0 && dstStep == len);
    for (uint32_t b = 0; b < p.blockCount && twin::MovesData(); ++b) {
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
    twin::PipeRead("DataCopyPad", twin::kPipeMte3, src.GetPhyAddr(), ((p.blockCount - 1) * srcStep + len) * sizeof(T));
    twin::TimeCopy(twin::kPipeMte3, buf, dst.GetPhyAddr(), p.blockLen, p.blockCount, dstStep * sizeof(T),
                   p.dstStride == 0 && srcStep == len);
    for (uint32_t b = 0; b < p.blockCount && twin::MovesData(); ++b) {
        std::memcpy(dst.GetPhyAddr() + b * dstStep, src.GetPhyAddr() + b * srcStep, len * sizeof(T));
    }
    buf->written += uint64_t(p.blockCount) * p.blockLen;
    twin::RecordBursts(buf, p.blockLen, p.blockCount, p.dstStride == 0 && srcStep == len);
}

}  // namespace AscendC

#endif  // NPU_SYNCBN_TWIN_COPY_H

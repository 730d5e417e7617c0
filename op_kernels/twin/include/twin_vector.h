// Vector math of the CPU twin (see kernel_operator.h): the level-2 ("first
// count elements") forms the kernels use, a level-0 Duplicate, Cast,
// ReduceSum and the scalar bf16 helpers; each op reads and writes UB on PIPE_V
// (twin_pipes.h) and is one vector instruction of the timing model
// (twin_timing.h: cycles from its repeats). In time-only mode the per-element
// work is skipped.
#ifndef NPU_SYNCBN_TWIN_VECTOR_H
#define NPU_SYNCBN_TWIN_VECTOR_H

namespace AscendC {

// ---------------------------------------------------------------- vector math (level-2: first `count` elements)
namespace twin_detail {
template <typename T>
inline void CheckOperand(const char* op, const LocalTensor<T>& t, int32_t count) {
    twin::CheckUbAligned(op, t.GetPhyAddr());
    twin::CheckCount(op, count, t.GetSize());
}
template <typename T, typename F>
inline void Binary(const char* op, double cycles, const LocalTensor<T>& dst, const LocalTensor<T>& a,
                   const LocalTensor<T>& b, int32_t count, F f) {
    static_assert(std::is_arithmetic<T>::value, "twin vector math works on float / integer tensors");
    CheckOperand(op, dst, count);
    CheckOperand(op, a, count);
    CheckOperand(op, b, count);
    twin::PipeRead(op, twin::kPipeV, a.GetPhyAddr(), count * sizeof(T));
    twin::PipeRead(op, twin::kPipeV, b.GetPhyAddr(), count * sizeof(T));
    twin::PipeWrite(op, twin::kPipeV, dst.GetPhyAddr(), count * sizeof(T));
    twin::TimeVector(cycles, count * sizeof(T));
    if (!twin::MovesData()) return;
    T* d = dst.GetPhyAddr();
    const T *x = a.GetPhyAddr(), *y = b.GetPhyAddr();
    for (int32_t i = 0; i < count; ++i) d[i] = f(x[i], y[i]);
}
template <typename T, typename F>
inline void Unary(const char* op, double cycles, const LocalTensor<T>& dst, const LocalTensor<T>& a, int32_t count,
                  F f) {
    static_assert(std::is_arithmetic<T>::value, "twin vector math works on float / integer tensors");
    CheckOperand(op, dst, count);
    CheckOperand(op, a, count);
    twin::PipeRead(op, twin::kPipeV, a.GetPhyAddr(), count * sizeof(T));
    twin::PipeWrite(op, twin::kPipeV, dst.GetPhyAddr(), count * sizeof(T));
    twin::TimeVector(cycles, count * sizeof(T));
    if (!twin::MovesData()) return;
    T* d = dst.GetPhyAddr();
    const T* x = a.GetPhyAddr();
    for (int32_t i = 0; i < count; ++i) d[i] = f(x[i]);
}
}  // namespace twin_detail

template <typename T>
inline void Add(const LocalTensor<T>& d, const LocalTensor<T>& a, const LocalTensor<T>& b, const int32_t& n) {
    twin_detail::Binary("Add", twin::timing::kCyclesAdd, d, a, b, n, [](T x, T y) { return T(x + y); });
}
template <typename T>
inline void Sub(const LocalTensor<T>& d, const LocalTensor<T>& a, const LocalTensor<T>& b, const int32_t& n) {
    twin_detail::Binary("Sub", twin::timing::kCyclesAdd, d, a, b, n, [](T x, T y) { return T(x - y); });
}
template <typename T>
inline void Mul(const LocalTensor<T>& d, const LocalTensor<T>& a, const LocalTensor<T>& b, const int32_t& n) {
    twin_detail::Binary("Mul", twin::timing::kCyclesAdd, d, a, b, n, [](T x, T y) { return T(x * y); });
}
template <typename T>
inline void Div(const LocalTensor<T>& d, const LocalTensor<T>& a, const LocalTensor<T>& b, const int32_t& n) {
    twin_detail::Binary("Div", twin::timing::kCyclesDiv, d, a, b, n, [](T x, T y) { return T(x / y); });
}
template <typename T>
inline void Adds(const LocalTensor<T>& d, const LocalTensor<T>& a, const T& s, const int32_t& n) {
    twin_detail::Unary("Adds", twin::timing::kCyclesAdds, d, a, n, [s](T x) { return T(x + s); });
}
template <typename T>
inline void Muls(const LocalTensor<T>& d, const LocalTensor<T>& a, const T& s, const int32_t& n) {
    twin_detail::Unary("Muls", twin::timing::kCyclesAdds, d, a, n, [s](T x) { return T(x * s); });
}
template <typename T>
inline void Maxs(const LocalTensor<T>& d, const LocalTensor<T>& a, const T& s, const int32_t& n) {
    twin_detail::Unary("Maxs", twin::timing::kCyclesAdds, d, a, n, [s](T x) { return x > s ? x : s; });
}
template <typename T>
inline void Sqrt(const LocalTensor<T>& d, const LocalTensor<T>& a, const int32_t& n) {
    twin_detail::Unary("Sqrt", sizeof(T) == 4 ? twin::timing::kCyclesAdd : twin::timing::kCyclesDiv, d, a, n, [](T x) { return T(std::sqrt(x)); });
}
template <typename T>
inline void Rsqrt(const LocalTensor<T>& d, const LocalTensor<T>& a, const int32_t& n) {
    twin_detail::Unary("Rsqrt", twin::timing::kCyclesAdds, d, a, n, [](T x) { return T(T(1) / std::sqrt(x)); });
}
template <typename T>
inline void Duplicate(const LocalTensor<T>& d, const T& s, const int32_t& n) {
    twin::CheckUbAligned("Duplicate", d.GetPhyAddr());
    twin::CheckCount("Duplicate", n, d.GetSize());
    twin::PipeWrite("Duplicate", twin::kPipeV, d.GetPhyAddr(), n * sizeof(T));
    twin::TimeVector(twin::timing::kCyclesAdds, n * sizeof(T));
    if (!twin::MovesData()) return;
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
    twin::PipeWrite("Duplicate", twin::kPipeV, d.GetPhyAddr(), repeatTime * perRepeat * sizeof(T));
    twin::TimeVector(twin::timing::kCyclesAdds, repeatTime * 256);
    if (!twin::MovesData()) return;
    T* p = d.GetPhyAddr();
    for (int32_t r = 0; r < repeatTime; ++r) {
        for (uint64_t i = 0; i < mask; ++i) p[r * perRepeat + i] = s;
    }
}

// Compares (level 2): bit i of dst (bytes, LSB first) = src0[i] <cmpMode> scalar.
// AscendC computes whole 256-byte repeats only ("count elements must fill
// 256-byte repeats; the rest is not computed"), so a count that is not a
// multiple of a repeat breaks "Compares count"; half and float only on 910B.
template <typename T, typename U>
inline void Compares(const LocalTensor<U>& dst, const LocalTensor<T>& src0, const T src1Scalar, CMPMODE cmpMode,
                     uint32_t count) {
    static_assert(std::is_same<T, float>::value || std::is_same<T, half>::value, "Compares takes half / float on 910B");
    static_assert(std::is_same<U, uint8_t>::value, "the twin's Compares writes a uint8_t bit mask");
    if ((uint64_t(count) * sizeof(T)) % 256 != 0) {
        twin::Fail("Compares count", "Compares of " + std::to_string(count) + " elements (" +
                                         twin::Str(uint64_t(count) * sizeof(T)) +
                                         " bytes): the count form computes whole 256-byte repeats only");
    }
    twin_detail::CheckOperand("Compares", src0, count);
    twin::CheckUbAligned("Compares", dst.GetPhyAddr());
    twin::CheckCount("Compares", (count + 7) / 8, dst.GetSize());
    twin::PipeRead("Compares", twin::kPipeV, src0.GetPhyAddr(), count * sizeof(T));
    twin::PipeWrite("Compares", twin::kPipeV, dst.GetPhyAddr(), (count + 7) / 8);
    twin::TimeVector(twin::timing::kCyclesAdds, uint64_t(count) * sizeof(T));
    if (!twin::MovesData()) return;
    const T* s = src0.GetPhyAddr();
    uint8_t* m = dst.GetPhyAddr();
    const float b = twin::AsFloat(src1Scalar);
    for (uint32_t i = 0; i < count; i += 8) m[i / 8] = 0;
    for (uint32_t i = 0; i < count; ++i) {
        const float a = twin::AsFloat(s[i]);
        bool r = false;
        switch (cmpMode) {
            case CMPMODE::LT: r = a < b; break;
            case CMPMODE::GT: r = a > b; break;
            case CMPMODE::EQ: r = a == b; break;
            case CMPMODE::LE: r = a <= b; break;
            case CMPMODE::GE: r = a >= b; break;
            case CMPMODE::NE: r = a != b; break;
        }
        if (r) m[i / 8] |= uint8_t(1u << (i % 8));
    }
}

// Select (level 2, mode VSEL_TENSOR_TENSOR_MODE): dst[i] = bit i of selMask ?
// src0[i] : src1[i]. On dav-2201 the tensor modes stage a 32-byte block at
// UB offset 184 KiB (asc-devkit's TMP_UB_OFFSET), so a kernel whose buffers
// reach that far has them overwritten: "Select scratch UB".
template <typename T, typename U>
inline void Select(const LocalTensor<T>& dst, const LocalTensor<U>& selMask, const LocalTensor<T>& src0,
                   const LocalTensor<T>& src1, SELMODE selMode, uint32_t count) {
    static_assert(std::is_same<T, float>::value || std::is_same<T, half>::value, "Select takes half / float on 910B");
    if (selMode != SELMODE::VSEL_TENSOR_TENSOR_MODE) {
        twin::Fail("unsupported Select", "the twin models the tensor-tensor mode of the count form only");
    }
    if (twin::Core().ubUsed > twin::kSelectScratchOffset) {
        twin::Fail("Select scratch UB", "Select with " + twin::Str(twin::Core().ubUsed) +
                                            " bytes of UB allocated: its scratch block at " +
                                            twin::Str(twin::kSelectScratchOffset) + " would overwrite them");
    }
    twin_detail::CheckOperand("Select", dst, count);
    twin_detail::CheckOperand("Select", src0, count);
    twin_detail::CheckOperand("Select", src1, count);
    twin::CheckUbAligned("Select", selMask.GetPhyAddr());
    twin::CheckCount("Select", (count + 7) / 8, selMask.GetSize() * sizeof(U));
    twin::PipeRead("Select", twin::kPipeV, selMask.GetPhyAddr(), (count + 7) / 8);
    twin::PipeRead("Select", twin::kPipeV, src0.GetPhyAddr(), count * sizeof(T));
    twin::PipeRead("Select", twin::kPipeV, src1.GetPhyAddr(), count * sizeof(T));
    twin::PipeWrite("Select", twin::kPipeV, dst.GetPhyAddr(), count * sizeof(T));
    twin::TimeVector(twin::timing::kCyclesAdd, uint64_t(count) * sizeof(T));
    if (!twin::MovesData()) return;
    const uint8_t* m = reinterpret_cast<const uint8_t*>(selMask.GetPhyAddr());
    const T *a = src0.GetPhyAddr(), *b = src1.GetPhyAddr();
    T* d = dst.GetPhyAddr();
    for (uint32_t i = 0; i < count; ++i) d[i] = (m[i / 8] >> (i % 8)) & 1u ? a[i] : b[i];
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
    twin::PipeRead("Cast", twin::kPipeV, src.GetPhyAddr(), n * sizeof(S));
    twin::PipeWrite("Cast", twin::kPipeV, dst.GetPhyAddr(), n * sizeof(D));
    twin::TimeVector(twin::timing::kCyclesAdds, uint64_t(n) * std::max(sizeof(D), sizeof(S)));
    if (!twin::MovesData()) return;
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
    twin::PipeRead("ReduceSum", twin::kPipeV, src.GetPhyAddr(), count * sizeof(T));
    twin::PipeWrite("ReduceSum", twin::kPipeV, work.GetPhyAddr(), need * sizeof(T));
    twin::PipeWrite("ReduceSum", twin::kPipeV, dst.GetPhyAddr(), need * sizeof(T));
    twin::TimeVector(twin::timing::kCyclesReduceSum, uint64_t(count) * sizeof(T));
    if (!twin::MovesData()) return;
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

#endif  // NPU_SYNCBN_TWIN_VECTOR_H

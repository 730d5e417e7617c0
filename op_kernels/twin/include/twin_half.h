// 16-bit float types of the twin (`half`, `bfloat16_t`): storage plus exact
// conversion to float and round-to-nearest-even conversion from float, which is
// what the kernels' Cast(..., CAST_RINT / CAST_NONE) needs.
//
// Rule "scalar bf16 cast": bisheng for dav-2201 rejects scalar conversions of
// bfloat16_t ("not support bf16 type cast"), so the twin's bfloat16_t has no
// implicit conversion either way: a kernel that writes one fails to compile
// here with that rule's name. Kernels convert bf16 scalars with AscendC's
// helpers ToFloat(bfloat16_t) / ToBfloat16(float); the twin itself uses
// BFloat16::FromFloat / ToFloat.
#ifndef NPU_SYNCBN_TWIN_HALF_H
#define NPU_SYNCBN_TWIN_HALF_H

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace twin {

inline uint32_t FloatBits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float BitsFloat(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

inline uint16_t FloatToHalfBits(float f) {
    const uint32_t x = FloatBits(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t exp = (x >> 23) & 0xFFu;
    uint32_t mant = x & 0x7FFFFFu;
    if (exp == 0xFFu) return static_cast<uint16_t>(sign | 0x7C00u | (mant ? 0x200u : 0u));
    const int e = static_cast<int>(exp) - 127 + 15;
    if (e >= 31) return static_cast<uint16_t>(sign | 0x7C00u);
    if (e <= 0) {  // subnormal half (or zero)
        if (e < -10) return static_cast<uint16_t>(sign);
        mant |= 0x800000u;
        const int shift = 14 - e;
        uint32_t h = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1u), halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (h & 1u))) ++h;
        return static_cast<uint16_t>(sign | h);
    }
    uint32_t h = (static_cast<uint32_t>(e) << 10) | (mant >> 13);
    const uint32_t rem = mant & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry may round up to inf: correct
    return static_cast<uint16_t>(sign | h);
}

inline float HalfBitsToFloat(uint16_t h) {
    const uint32_t sign = (h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
    if (exp == 0x1Fu) return BitsFloat(sign | 0x7F800000u | (mant << 13));
    if (exp == 0) {
        if (mant == 0) return BitsFloat(sign);
        int e = -1;
        do { ++e; mant <<= 1; } while (!(mant & 0x400u));
        return BitsFloat(sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mant & 0x3FFu) << 13));
    }
    return BitsFloat(sign | ((exp + 127 - 15) << 23) | (mant << 13));
}

inline uint16_t FloatToBf16Bits(float f) {
    const uint32_t x = FloatBits(f);
    if ((x & 0x7F800000u) == 0x7F800000u && (x & 0x7FFFFFu)) return static_cast<uint16_t>((x >> 16) | 0x40u);
    return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

inline float Bf16BitsToFloat(uint16_t b) { return BitsFloat(static_cast<uint32_t>(b) << 16); }

struct Half {
    uint16_t bits = 0;
    Half() = default;
    Half(float f) : bits(FloatToHalfBits(f)) {}  // NOLINT: implicit like the device type
    operator float() const { return HalfBitsToFloat(bits); }
};

template <typename>
struct AlwaysFalse : std::false_type {};

struct BFloat16 {
    uint16_t bits = 0;
    BFloat16() = default;
    static BFloat16 FromFloat(float f) {
        BFloat16 b;
        b.bits = FloatToBf16Bits(f);
        return b;
    }
    float ToFloat() const { return Bf16BitsToFloat(bits); }

    template <typename U, typename = typename std::enable_if<std::is_arithmetic<U>::value>::type>
    BFloat16(U) {  // NOLINT: exists only to name the rule
        static_assert(AlwaysFalse<U>::value,
                      "twin rule 'scalar bf16 cast': no scalar conversion to bfloat16_t on dav-2201; use ToBfloat16(float)");
    }
    template <typename U, typename = typename std::enable_if<std::is_arithmetic<U>::value>::type>
    operator U() const {
        static_assert(AlwaysFalse<U>::value,
                      "twin rule 'scalar bf16 cast': no scalar conversion of bfloat16_t on dav-2201; use ToFloat(bfloat16_t) "
                      "or a vector Cast");
        return U();
    }
};

// Scalar <-> float for the twin's own code (vector Cast, test data): every element type.
inline float AsFloat(float v) { return v; }
inline float AsFloat(Half v) { return v; }
inline float AsFloat(BFloat16 v) { return v.ToFloat(); }
template <typename T>
inline T FromFloat(float v) { return T(v); }
template <>
inline BFloat16 FromFloat<BFloat16>(float v) { return BFloat16::FromFloat(v); }

}  // namespace twin

using half = twin::Half;
using bfloat16_t = twin::BFloat16;

#endif  // NPU_SYNCBN_TWIN_HALF_H

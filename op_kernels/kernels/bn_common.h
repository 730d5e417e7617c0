/*
 * Kernel-side helpers shared by the batch-norm kernels: reading the tiling
 * struct, the item -> core and item -> tile maps of the row tiling
 * (include/batch_norm_tiling.h), the tile / per-channel copies, the lane sums
 * and small vector formulas.
 */
#ifndef NPU_SYNCBN_BN_COMMON_H
#define NPU_SYNCBN_BN_COMMON_H

#include "kernel_operator.h"
#include "batch_norm_tiling.h"

namespace bn {

using namespace AscendC;

constexpr uint32_t BLOCK_BYTES = 32;
constexpr int32_t BUFFER_NUM = 2;  // double buffering: tile i+1 moves in while tile i computes

__aicore__ inline uint64_t Min(uint64_t a, uint64_t b) { return a < b ? a : b; }
__aicore__ inline uint64_t Max(uint64_t a, uint64_t b) { return a > b ? a : b; }
__aicore__ inline uint64_t CeilDiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }
__aicore__ inline uint64_t AlignUp(uint64_t a, uint64_t b) { return CeilDiv(a, b) * b; }

// The absent GM argument (the plain entries of kernels shared with a fused entry).
__aicore__ inline GM_ADDR NoGm() { return nullptr; }

// The tiling arrives as bytes in GM; copy it word by word into a local struct.
template <typename Tiling>
__aicore__ inline void LoadTiling(Tiling& dst, GM_ADDR src) {
    static_assert(sizeof(Tiling) % 4 == 0, "tiling structs are made of 32-bit words");
    uint32_t* d = reinterpret_cast<uint32_t*>(&dst);
    __gm__ uint32_t* s = reinterpret_cast<__gm__ uint32_t*>(src);
    for (uint32_t i = 0; i < sizeof(Tiling) / 4; ++i) d[i] = s[i];
}

struct ItemRange {
    uint64_t begin;
    uint64_t end;
};

// Units [begin, end) of core k: itemsBase each, one more for the first itemsRem cores.
__aicore__ inline ItemRange CoreUnits(const BnRowTiling& t, uint64_t k) {
    const uint64_t begin = k * t.itemsBase + Min(k, t.itemsRem);
    return {begin, begin + t.itemsBase + (k < t.itemsRem ? 1 : 0)};
}

// Items [begin, end) of core k in the elementwise kernels: unitItems items a unit.
__aicore__ inline ItemRange CoreItems(const BnRowTiling& t, uint64_t k) {
    const ItemRange u = CoreUnits(t, k);
    return {u.begin * t.unitItems, u.end * t.unitItems};
}

// Channels, or in the packed layout channel groups, of the row tiling: what
// an item's tile and a reducing kernel's unit belong to.
__aicore__ inline uint64_t Groups(const BnRowTiling& t) { return t.packGroup ? CeilDiv(t.c, t.packGroup) : t.c; }

// The reducing kernels' unit u = part * groups + channel (or group): its
// channel, and the items of its part (consecutive tiles of the channel;
// include/batch_norm_tiling.h).
__aicore__ inline uint64_t ChannelOfUnit(const BnRowTiling& t, uint64_t u) { return u % Groups(t); }

__aicore__ inline ItemRange ItemsOfUnit(const BnRowTiling& t, uint64_t u) {
    const uint64_t part = u / Groups(t), first = (u % Groups(t)) * t.tilesPerChannel;
    return {first + part * t.tilesPerChannel / t.splits, first + (part + 1) * t.tilesPerChannel / t.splits};
}

__aicore__ inline uint64_t CoreOfItem(const BnRowTiling& t, uint64_t item) {
    const uint64_t unit = item / t.unitItems;
    const uint64_t big = t.itemsBase + 1;
    const uint64_t split = t.itemsRem * big;
    return unit < split ? unit / big : t.itemsRem + (unit - split) / t.itemsBase;
}

__aicore__ inline uint64_t ChannelOfItem(const BnRowTiling& t, uint64_t item) { return item / t.tilesPerChannel; }

// The reducing kernels walk a core's units one tile ahead: the item after
// `item` of unit u (the unit's next tile, else the next unit's first), so its
// copy-in is issued before the current tile is computed and before the unit's
// sums are read back by the scalar unit. False after the core's last item.
__aicore__ inline bool NextItem(const BnRowTiling& t, const ItemRange& units, uint64_t u, uint64_t item,
                                uint64_t& next) {
    if (item + 1 < ItemsOfUnit(t, u).end) {
        next = item + 1;
        return true;
    }
    if (u + 1 >= units.end) return false;
    next = ItemsOfUnit(t, u + 1).begin;
    return true;
}

// A float constant as a scalar of T. bfloat16_t goes through AscendC's scalar
// conversion helper: bisheng for dav-2201 rejects a plain scalar bf16 cast.
template <typename T>
__aicore__ inline T ScalarOf(float v) {
    if constexpr (std::is_same<T, bfloat16_t>::value) {
        return ToBfloat16(v);
    } else {
        return static_cast<T>(v);
    }
}

// One tile: rows [row0, row0 + rows) x columns [col0, col0 + len) of one
// channel, or (packed) of one group's G*L elements of each sample.
struct Tile {
    uint64_t channel;   // the channel, or the group when packed
    uint64_t row0;
    uint64_t rows;
    uint64_t col0;
    uint64_t len;
    uint64_t stride;    // UB row stride (elements of T): len rounded up to 32 bytes
    uint64_t gmOffset;  // element offset of the tile's first element
};

template <typename T>
__aicore__ inline Tile TileOfItem(const BnRowTiling& t, uint64_t item) {
    Tile tile;
    tile.channel = item / t.tilesPerChannel;
    const uint64_t r = item % t.tilesPerChannel;
    tile.row0 = (r / t.lChunks) * t.tileRows;
    tile.rows = Min(t.tileRows, t.n - tile.row0);
    tile.col0 = (r % t.lChunks) * t.tileLen;
    tile.len = Min(t.tileLen, t.l - tile.col0);
    tile.gmOffset = (tile.row0 * t.c + tile.channel) * t.l + tile.col0;
    if (t.packGroup) {  // lChunks == 1: the group's channels side by side
        const uint64_t c0 = tile.channel * t.packGroup;
        tile.len = Min(t.packGroup, t.c - c0) * t.l;
        tile.gmOffset = (tile.row0 * t.c + c0) * t.l;
    }
    tile.stride = AlignUp(tile.len, BLOCK_BYTES / sizeof(T));
    return tile;
}

// GM -> UB copy of a tile, rows `stride` apart in UB. Whole 32-byte rows go with
// DataCopy; a row with a ragged end uses DataCopyPad, its pad lanes set to padValue.
template <typename T>
__aicore__ inline void CopyTileIn(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const BnRowTiling& t,
                                  const Tile& tile, T padValue) {
    const uint64_t rowGap = (t.c * t.l - tile.len) * sizeof(T);  // bytes between rows of one channel in GM
    const bool aligned = tile.len == tile.stride;
    if (aligned && tile.rows == 1) {
        DataCopy(dst, src[tile.gmOffset], static_cast<uint32_t>(tile.len));
    } else if (aligned && rowGap / BLOCK_BYTES <= 65535 && tile.len * sizeof(T) / BLOCK_BYTES <= 65535) {
        DataCopyParams p(static_cast<uint16_t>(tile.rows), static_cast<uint16_t>(tile.len * sizeof(T) / BLOCK_BYTES),
                         static_cast<uint16_t>(rowGap / BLOCK_BYTES), 0);
        DataCopy(dst, src[tile.gmOffset], p);
    } else {
        DataCopyExtParams p(static_cast<uint16_t>(tile.rows), static_cast<uint32_t>(tile.len * sizeof(T)),
                            static_cast<uint32_t>(rowGap), 0, 0);
        DataCopyPadExtParams<T> pad(true, 0, static_cast<uint8_t>(tile.stride - tile.len), padValue);
        DataCopyPad(dst, src[tile.gmOffset], p, pad);
    }
}

// UB -> GM copy of a tile (only the `len` valid elements of each row are written).
template <typename T>
__aicore__ inline void CopyTileOut(const GlobalTensor<T>& dst, const LocalTensor<T>& src, const BnRowTiling& t,
                                   const Tile& tile) {
    const uint64_t rowGap = (t.c * t.l - tile.len) * sizeof(T);
    if (tile.len == tile.stride && tile.rows == 1) {
        DataCopy(dst[tile.gmOffset], src, static_cast<uint32_t>(tile.len));
    } else {
        DataCopyExtParams p(static_cast<uint16_t>(tile.rows), static_cast<uint32_t>(tile.len * sizeof(T)), 0,
                            static_cast<uint32_t>(rowGap), 0);
        DataCopyPad(dst[tile.gmOffset], src, p);
    }
}

// `count` floats of a per-channel vector from channel c0 into UB (any count).
__aicore__ inline void CopyChannelsIn(const LocalTensor<float>& dst, const GlobalTensor<float>& src, uint64_t c0,
                                      uint64_t count) {
    DataCopyExtParams p(1, static_cast<uint32_t>(count * sizeof(float)), 0, 0, 0);
    DataCopyPadExtParams<float> pad(false, 0, 0, 0.0f);
    DataCopyPad(dst, src[c0], p, pad);
}

__aicore__ inline void CopyChannelsOut(const GlobalTensor<float>& dst, const LocalTensor<float>& src, uint64_t c0,
                                       uint64_t count) {
    DataCopyExtParams p(1, static_cast<uint32_t>(count * sizeof(float)), 0, 0, 0);
    DataCopyPad(dst[c0], src, p);
}

// CopyIn of one input: a fresh buffer of q gets the tile (pad lanes 0) and is queued.
template <typename T, typename Q>
__aicore__ inline void EnQueTile(Q& q, const GlobalTensor<T>& src, const BnRowTiling& t, const Tile& tile) {
    LocalTensor<T> dst = q.template AllocTensor<T>();
    CopyTileIn(dst, src, t, tile, ScalarOf<T>(0.0f));
    q.EnQue(dst);
}

// A plain copy through Adds when D and S are the same (float) type, else a Cast.
template <typename D, typename S>
__aicore__ inline void CastOrCopy(const LocalTensor<D>& dst, const LocalTensor<S>& src, RoundMode mode,
                                  uint32_t count) {
    if constexpr (std::is_same<D, S>::value) {
        Adds(dst, src, 0.0f, static_cast<int32_t>(count));
    } else {
        Cast(dst, src, mode, count);
    }
}

// Widens a T tile to float / narrows a float tile back to T (round to nearest even).
template <typename T>
__aicore__ inline void ToFloat(const LocalTensor<float>& dst, const LocalTensor<T>& src, uint32_t count) {
    CastOrCopy(dst, src, RoundMode::CAST_NONE, count);
}

template <typename T>
__aicore__ inline void FromFloat(const LocalTensor<T>& dst, const LocalTensor<float>& src, uint32_t count) {
    CastOrCopy(dst, src, RoundMode::CAST_RINT, count);
}

// `count` lanes of src as float: src itself when T is float, else widened into dst.
template <typename T>
__aicore__ inline LocalTensor<float> AsFloat(const LocalTensor<float>& dst, const LocalTensor<T>& src, int32_t count) {
    if constexpr (std::is_same<T, float>::value) {
        return src;
    } else {
        Cast(dst, src, RoundMode::CAST_NONE, static_cast<uint32_t>(count));
        return dst;
    }
}

// dst = float(src) + s, or - b, over `count` lanes: for float input one
// instruction straight from src, else a Cast into dst first.
template <typename T>
__aicore__ inline void AddsAsFloat(const LocalTensor<float>& dst, const LocalTensor<T>& src, float s, int32_t count) {
    Adds(dst, AsFloat(dst, src, count), s, count);
}

template <typename T>
__aicore__ inline void SubAsFloat(const LocalTensor<float>& dst, const LocalTensor<T>& src, const LocalTensor<float>& b,
                                  int32_t count) {
    Sub(dst, AsFloat(dst, src, count), b, count);
}

// Compute's side of EnQueTile: the next tile of q, widened to float in dst; q's buffer is freed.
template <typename T, typename Q>
__aicore__ inline void DeQueToFloat(const LocalTensor<float>& dst, Q& q, uint32_t count) {
    LocalTensor<T> src = q.template DeQue<T>();
    ToFloat(dst, src, count);
    q.FreeTensor(src);
}

// Compute's end: the float result narrowed to T into a fresh buffer of q, queued for CopyOut.
template <typename T, typename Q>
__aicore__ inline void EnQueFromFloat(Q& q, const LocalTensor<float>& src, uint32_t count) {
    LocalTensor<T> dst = q.template AllocTensor<T>();
    FromFloat(dst, src, count);
    q.EnQue(dst);
}

// CopyOut of one output: the next tile of q to GM; q's buffer is freed.
template <typename T, typename Q>
__aicore__ inline void DeQueTileOut(const GlobalTensor<T>& dst, Q& q, const BnRowTiling& t, const Tile& tile) {
    LocalTensor<T> src = q.template DeQue<T>();
    CopyTileOut(dst, src, t, tile);
    q.FreeTensor(src);
}

// The pipe of E's second half waits for everything its first half has issued.
template <HardEvent E>
__aicore__ inline void Handoff() {
    const TEventID id = GetTPipePtr()->FetchEventID(E);
    SetFlag<E>(id);
    WaitFlag<E>(id);
}

// Sum of the first `count` lanes, read back as a scalar (res and work: one
// float per 256-byte repeat each, see ReduceWorkElems in host/tiling.cpp).
__aicore__ inline float SumLanes(const LocalTensor<float>& lanes, uint64_t count, const LocalTensor<float>& res,
                                 const LocalTensor<float>& work) {
    ReduceSum(res, lanes, work, static_cast<int32_t>(count));
    // Only the vector pipe's result is waited for (V -> S), not every pipe: the
    // next tile's copy-in already issued keeps moving.
    Handoff<HardEvent::V_S>();
    const float sum = res.GetValue(0);
    // The next ReduceSum (V) rewrites res: order it after this scalar read.
    // bisheng's --cce-auto-sync (on in ascendc_library builds) would insert
    // this S->V event; the kernels do not rely on it (the twin's pipe model
    // checks them with auto-sync off too).
    Handoff<HardEvent::S_V>();
    return sum;
}

// SumLanes of two lane vectors with one wait for the vector pipe: both
// ReduceSums are issued, then one V -> S event, then both scalar reads (each
// read-back empties the vector pipe, so a unit pays it once, not twice).
// res and res2 are separate result buffers (ReduceWorkElems floats each).
__aicore__ inline void SumLanes2(const LocalTensor<float>& a, const LocalTensor<float>& b, uint64_t count,
                                 const LocalTensor<float>& res, const LocalTensor<float>& res2,
                                 const LocalTensor<float>& work, float& sumA, float& sumB) {
    ReduceSum(res, a, work, static_cast<int32_t>(count));
    ReduceSum(res2, b, work, static_cast<int32_t>(count));
    Handoff<HardEvent::V_S>();
    sumA = res.GetValue(0);
    sumB = res2.GetValue(0);
    Handoff<HardEvent::S_V>();  // the next ReduceSums rewrite res, res2
}

// dst = 1 / src as Duplicate + Div: full float precision, unlike an approximate
// reciprocal. `ones` is scratch of at least n floats.
__aicore__ inline void OneOver(const LocalTensor<float>& dst, const LocalTensor<float>& src,
                               const LocalTensor<float>& ones, int32_t n) {
    Duplicate(ones, 1.0f, n);
    Div(dst, ones, src, n);
}

// var <- invstd = 1 / sqrt(var + eps) (Sqrt + Div, not an approximate Rsqrt).
__aicore__ inline void InvStdInPlace(const LocalTensor<float>& var, const LocalTensor<float>& ones, float eps,
                                     int32_t n) {
    Adds(var, var, eps, n);
    Sqrt(var, var, n);
    OneOver(var, var, ones, n);
}

// Per-channel parameters of the elementwise kernels for channels [c0, c0 + n):
// mean, invstd and scale = invstd * weight (weight 1 when absent). Waits for its
// copies, and any the caller issued before, with one PipeBarrier, then computes
// scale; the caller ends with a PipeBarrier before reading values as scalars.
__aicore__ inline void LoadNormWindow(const LocalTensor<float>& mean, const LocalTensor<float>& invstd,
                                      const LocalTensor<float>& scale, const GlobalTensor<float>& meanGm,
                                      const GlobalTensor<float>& invstdGm, const GlobalTensor<float>& weightGm,
                                      bool hasWeight, uint64_t c0, uint64_t n) {
    CopyChannelsIn(mean, meanGm, c0, n);
    CopyChannelsIn(invstd, invstdGm, c0, n);
    if (hasWeight) CopyChannelsIn(scale, weightGm, c0, n);
    PipeBarrier<PIPE_ALL>();
    if (!hasWeight) Duplicate(scale, 1.0f, static_cast<int32_t>(n));
    Mul(scale, scale, invstd, static_cast<int32_t>(n));
}

// The per-channel GM inputs of backward_elemt, bound once for either layout:
// mean, invstd, weight (when given), sum_dy, sum_dy_xmu as float32 (C,), and
// the ranks' counts as float32 (W,).
struct GradElemtGm {
    GlobalTensor<float> mean, invstd, weight, sumDy, sumDyXmu, count;
    bool hasWeight = false;

    __aicore__ inline void Bind(GM_ADDR meanP, GM_ADDR invstdP, GM_ADDR weightP, GM_ADDR sumDyP, GM_ADDR sumDyXmuP,
                                GM_ADDR countP, uint64_t c, uint64_t world, bool withWeight) {
        hasWeight = withWeight;
        mean.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(meanP), c);
        invstd.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(invstdP), c);
        if (hasWeight) weight.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(weightP), c);
        sumDy.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(sumDyP), c);
        sumDyXmu.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(sumDyXmuP), c);
        count.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(countP), world);
    }
};

// Per-channel coefficients of backward_elemt for channels [c0, c0 + n):
// mean, invstd, k = invstd * weight, a = sum_dy / N, b = sum_dy_xmu / N * invstd^2
// (invTotal = 1 / N). Waits for its copies with LoadNormWindow's barrier; the
// caller orders the results before their next use.
__aicore__ inline void LoadGradCoefficients(const LocalTensor<float>& mean, const LocalTensor<float>& invstd,
                                            const LocalTensor<float>& k, const LocalTensor<float>& a,
                                            const LocalTensor<float>& b, const GradElemtGm& gm, float invTotal,
                                            uint64_t c0, uint64_t count) {
    const int32_t n = static_cast<int32_t>(count);
    CopyChannelsIn(a, gm.sumDy, c0, count);
    CopyChannelsIn(b, gm.sumDyXmu, c0, count);
    LoadNormWindow(mean, invstd, k, gm.mean, gm.invstd, gm.weight, gm.hasWeight, c0, count);
    Muls(a, a, invTotal, n);
    Muls(b, b, invTotal, n);
    Mul(b, b, invstd, n);
    Mul(b, b, invstd, n);
}

// ReLU's gate in the fused-activation kernels: dst = src where gate > 0 or gate
// is NaN, else 0, i.e. torch.relu (gate = src) and threshold_backward at 0
// (gate = the forward output). Compares (gate <= 0) then Select between a zero
// tile and src; a Maxs would be shorter, but its NaN behaviour is not
// documented and torch.relu keeps NaNs. The gate tile must hold gateElems
// floats: Compares computes whole 256-byte repeats (host/tiling.cpp, Gated).
struct ReluGate {
    TBuf<QuePosition::VECCALC> zeros, mask;
    uint32_t gateElems = 0;

    __aicore__ inline void Init(TPipe& pipe, uint64_t tileElems, uint32_t gateElemsOfTiling) {
        gateElems = gateElemsOfTiling;
        pipe.InitBuffer(zeros, static_cast<uint32_t>(tileElems * sizeof(float)));
        pipe.InitBuffer(mask, static_cast<uint32_t>(AlignUp(gateElems / 8, BLOCK_BYTES)));
        Duplicate(zeros.Get<float>(), 0.0f, static_cast<int32_t>(tileElems));
    }

    __aicore__ inline void Apply(const LocalTensor<float>& dst, const LocalTensor<float>& src,
                                 const LocalTensor<float>& gate, int32_t count) {
        LocalTensor<uint8_t> bits = mask.Get<uint8_t>();
        Compares(bits, gate, 0.0f, CMPMODE::LE, gateElems);
        Select(dst, bits, zeros.Get<float>(), src, SELMODE::VSEL_TENSOR_TENSOR_MODE, static_cast<uint32_t>(count));
    }
};

// The front of batch_norm_backward_reduce_relu(_clast), for either layout:
// the forward output y gates dy by ReLU's mask into grad_sum, which is queued
// for the kernel to copy out (in its layout) and reduced in dy's place.
template <typename T>
struct ReluGradGate {
    GlobalTensor<T> yGm, gradSumGm;
    TQue<QuePosition::VECIN, BUFFER_NUM> yQueue;
    TQue<QuePosition::VECOUT, BUFFER_NUM> gradSumQueue;
    TBuf<QuePosition::VECCALC> yfBuf;
    ReluGate gate;

    __aicore__ inline void Init(TPipe& pipe, GM_ADDR y, GM_ADDR gradSum, uint64_t total, uint64_t tileElems,
                                uint32_t gateElems) {
        yGm.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(y), total);
        gradSumGm.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(gradSum), total);
        pipe.InitBuffer(yQueue, BUFFER_NUM, static_cast<uint32_t>(tileElems * sizeof(T)));
        pipe.InitBuffer(gradSumQueue, BUFFER_NUM, static_cast<uint32_t>(tileElems * sizeof(T)));
        pipe.InitBuffer(yfBuf, static_cast<uint32_t>(gateElems * sizeof(float)));
        gate.Init(pipe, tileElems, gateElems);
    }

    // dyf <- grad_sum (the next queued y tile's mask applied), queued on
    // gradSumQueue. Exact: a selection of dy's own values, so its T copy
    // rounds nothing.
    __aicore__ inline void Apply(const LocalTensor<float>& dyf, int32_t count) {
        LocalTensor<float> yf = yfBuf.Get<float>();
        DeQueToFloat<T>(yf, yQueue, count);
        gate.Apply(dyf, dyf, yf, count);
        EnQueFromFloat<T>(gradSumQueue, dyf, count);
    }
};

// The end of batch_norm_elemt(_act) on a float tile v = bn(x), into the T tile
// y. Fused (batch_norm_elemt_act): v is rounded to T first when T is not
// float (the unfused add reads bn(x) from memory, so every path rounds
// alike), then v + residual, then ReLU, each when the tiling asks. Fused
// kernels allocate the residual queue and the gate whatever the flags: that is
// the UB plan of BN_OP_ELEMT_ACT.
template <typename T>
struct ElemtEpilogue {
    TQue<QuePosition::VECIN, BUFFER_NUM> residualQueue;
    TBuf<QuePosition::VECCALC> rfBuf;
    ReluGate gate;
    bool hasResidual = false, relu = false;

    __aicore__ inline void Init(TPipe& pipe, bool fused, const BnActFields& act, uint64_t tileElems) {
        if (!fused) return;
        hasResidual = act.hasResidual != 0;
        relu = act.relu != 0;
        pipe.InitBuffer(residualQueue, BUFFER_NUM, static_cast<uint32_t>(tileElems * sizeof(T)));
        pipe.InitBuffer(rfBuf, static_cast<uint32_t>(tileElems * sizeof(float)));
        gate.Init(pipe, tileElems, act.gateElems);
    }

    __aicore__ inline void Finish(const LocalTensor<float>& v, const LocalTensor<T>& y, int32_t count) {
        if (hasResidual) {
            if constexpr (!std::is_same<T, float>::value) {
                FromFloat(y, v, count);
                ToFloat(v, y, count);
            }
            LocalTensor<float> rf = rfBuf.Get<float>();
            DeQueToFloat<T>(rf, residualQueue, count);
            Add(v, v, rf, count);
        }
        if (relu) gate.Apply(v, v, v, count);
        FromFloat(y, v, count);
    }
};

// Kernel entry: runs Kernel<T> for the input dtype of the tiling (half, bfloat16, else float).
template <template <typename> class Kernel, typename... Args>
__aicore__ inline void RunForDtype(uint32_t dtype, const Args&... args) {
    if (dtype == BN_FLOAT16) {
        Kernel<half> op;
        op.Init(args...);
        op.Process();
    } else if (dtype == BN_BFLOAT16) {
        Kernel<bfloat16_t> op;
        op.Init(args...);
        op.Process();
    } else {
        Kernel<float> op;
        op.Init(args...);
        op.Process();
    }
}

}  // namespace bn

#endif  // NPU_SYNCBN_BN_COMMON_H

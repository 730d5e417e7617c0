/*
 * Test-only kernels whose modelled time can be worked out by hand, for the
 * timing model's tests (tests/test_twin_timing.py). Run through
 * twin_run_timing_kernel (capi.cpp): `buf` is a GM buffer of tiling[0] bytes,
 * 512-byte aligned; tiling[1] is the kernel's argument. Only real AscendC API
 * forms are used.
 */
#include "kernel_operator.h"

using namespace AscendC;

namespace {

constexpr uint32_t kTile = 32 * 1024;  // bytes of one streamed tile

struct TimingArgs {
    uint64_t bytes;
    uint64_t arg;
};

__aicore__ inline TimingArgs ArgsOf(GM_ADDR tiling) { return *reinterpret_cast<__gm__ TimingArgs*>(tiling); }

// Streams `bytes` bytes from `offset` of buf through a double-buffered queue of kTile tiles.
__aicore__ inline void Stream(GM_ADDR buf, uint64_t total, uint64_t offset, uint64_t bytes) {
    TPipe pipe;
    TQue<QuePosition::VECIN, 2> in;
    pipe.InitBuffer(in, 2, kTile);
    GlobalTensor<float> gm;
    gm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(buf), total / sizeof(float));
    for (uint64_t at = offset; at < offset + bytes; at += kTile) {
        LocalTensor<float> x = in.AllocTensor<float>();
        DataCopy(x, gm[at / sizeof(float)], kTile / sizeof(float));
        in.EnQue(x);
        LocalTensor<float> y = in.DeQue<float>();
        in.FreeTensor(y);
    }
}

}  // namespace

// Core 0 copies arg bytes (a multiple of 32) GM -> UB with one DataCopy.
extern "C" __global__ __aicore__ void twin_timing_one_copy(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    const TimingArgs a = ArgsOf(tiling);
    if (GetBlockIdx() != 0) return;
    TPipe pipe;
    TBuf<QuePosition::VECCALC> ub;
    pipe.InitBuffer(ub, static_cast<uint32_t>(a.arg));
    GlobalTensor<float> gm;
    gm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(buf), a.bytes / sizeof(float));
    DataCopy(ub.Get<float>(), gm, static_cast<uint32_t>(a.arg / sizeof(float)));
}

// Core 0 copies 64 rows of arg bytes, 4096 bytes apart in GM, with one DataCopyPad.
extern "C" __global__ __aicore__ void twin_timing_rows(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    const TimingArgs a = ArgsOf(tiling);
    if (GetBlockIdx() != 0) return;
    TPipe pipe;
    TBuf<QuePosition::VECCALC> ub;
    pipe.InitBuffer(ub, static_cast<uint32_t>(64 * ((a.arg + 31) / 32 * 32)));
    GlobalTensor<float> gm;
    gm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(buf), a.bytes / sizeof(float));
    DataCopyExtParams p(64, static_cast<uint32_t>(a.arg), static_cast<uint32_t>(4096 - a.arg), 0, 0);
    DataCopyPadExtParams<float> pad(false, 0, 0, 0.0f);
    DataCopyPad(ub.Get<float>(), gm, p, pad);
}

namespace {
// A 32 KiB GM -> UB copy into one buffer and a 32 KiB float Div on two
// others: independent, so MTE2 and V overlap unless `barrier` puts a
// PipeBarrier<PIPE_ALL> between them.
__aicore__ inline void CopyAndDivide(GM_ADDR buf, GM_ADDR tiling, bool barrier) {
    const TimingArgs a = ArgsOf(tiling);
    if (GetBlockIdx() != 0) return;
    TPipe pipe;
    TBuf<QuePosition::VECCALC> in, x, y;
    pipe.InitBuffer(in, kTile);
    pipe.InitBuffer(x, kTile);
    pipe.InitBuffer(y, kTile);
    GlobalTensor<float> gm;
    gm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(buf), a.bytes / sizeof(float));
    const int32_t n = kTile / sizeof(float);
    Duplicate(x.Get<float>(), 1.0f, n);
    Duplicate(y.Get<float>(), 2.0f, n);
    PipeBarrier<PIPE_ALL>();
    DataCopy(in.Get<float>(), gm, static_cast<uint32_t>(n));
    if (barrier) PipeBarrier<PIPE_ALL>();
    Div(x.Get<float>(), x.Get<float>(), y.Get<float>(), n);
}
}  // namespace

extern "C" __global__ __aicore__ void twin_timing_overlap(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    CopyAndDivide(buf, tiling, false);
}

extern "C" __global__ __aicore__ void twin_timing_pipe_all(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    CopyAndDivide(buf, tiling, true);
}

// Every core streams its equal share of the buffer (a multiple of 32 KiB per core).
extern "C" __global__ __aicore__ void twin_timing_stream(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    const TimingArgs a = ArgsOf(tiling);
    const uint64_t share = a.bytes / GetBlockNum();
    Stream(buf, a.bytes, share * GetBlockIdx(), share);
}

// Core 0 streams the whole buffer; the other cores have nothing to do.
extern "C" __global__ __aicore__ void twin_timing_one_core_streams(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    const TimingArgs a = ArgsOf(tiling);
    if (GetBlockIdx() == 0) Stream(buf, a.bytes, 0, a.bytes);
}

// Core k streams k + 1 tiles, then every core meets at SyncAll; after it core 0
// streams one more tile: it ends one tile after the slowest core's k + 1.
extern "C" __global__ __aicore__ void twin_timing_sync_all(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIV_1_0);
    const TimingArgs a = ArgsOf(tiling);
    const uint64_t k = GetBlockIdx();
    Stream(buf, a.bytes, 0, (k + 1) * kTile);
    SyncAll();
    if (k == 0) Stream(buf, a.bytes, 0, kTile);
}

// Core 0 runs 8 tiles of copy-in (MTE2) then a Div reading the tile (V),
// through a queue of arg buffers: with 1 the next copy waits for the Div to
// have read the buffer; with 2 the copy of tile i + 1 overlaps the Div of tile i.
extern "C" __global__ __aicore__ void twin_timing_queue_depth(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    const TimingArgs a = ArgsOf(tiling);
    if (GetBlockIdx() != 0) return;
    TPipe pipe;
    TQue<QuePosition::VECIN, 2> in;
    TBuf<QuePosition::VECCALC> out;
    pipe.InitBuffer(in, static_cast<uint8_t>(a.arg), kTile);
    pipe.InitBuffer(out, kTile);
    GlobalTensor<float> gm;
    gm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(buf), a.bytes / sizeof(float));
    const int32_t n = kTile / sizeof(float);
    for (uint32_t i = 0; i < 8; ++i) {
        LocalTensor<float> x = in.AllocTensor<float>();
        DataCopy(x, gm[i * n], static_cast<uint32_t>(n));
        in.EnQue(x);
        LocalTensor<float> y = in.DeQue<float>();
        Div(out.Get<float>(), y, y, n);
        in.FreeTensor(y);
    }
}

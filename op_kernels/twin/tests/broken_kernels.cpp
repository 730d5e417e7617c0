/*
 * Test-only kernels, each breaking one rule the twin must catch (plus correct
 * control kernels). Compiled into the twin library, run through
 * twin_run_test_kernel (capi.cpp: which UB plan and buffer fill each gets);
 * tests/test_twin_rules.py expects a TwinError naming the kernel and the rule.
 * `buf` is 256 floats. They use only real AscendC API forms, so they also
 * compile against the real headers. The compile-time rule (scalar bf16 cast)
 * has its planted source in tests/compile_fail/.
 */
#include "kernel_operator.h"

using namespace AscendC;

extern "C" __global__ __aicore__ void twin_broken_ub_overflow(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    TPipe pipe;
    TQue<QuePosition::VECIN, 2> in;
    TBuf<QuePosition::VECCALC> big;
    pipe.InitBuffer(in, 2, 64 * 1024);
    pipe.InitBuffer(big, 65 * 1024);  // 128 KiB + 65 KiB > 192 KiB
}

extern "C" __global__ __aicore__ void twin_broken_misaligned_copy(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    TPipe pipe;
    TQue<QuePosition::VECIN, 1> in;
    pipe.InitBuffer(in, 1, 1024);
    GlobalTensor<float> gm;
    gm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(buf), 256);
    LocalTensor<float> x = in.AllocTensor<float>();
    DataCopy(x, gm, 7);  // 28 bytes: needs DataCopyPad
    in.FreeTensor(x);
}

extern "C" __global__ __aicore__ void twin_broken_queue_leak(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    TPipe pipe;
    TQue<QuePosition::VECIN, 2> in;
    pipe.InitBuffer(in, 2, 1024);
    GlobalTensor<float> gm;
    gm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(buf), 256);
    LocalTensor<float> x = in.AllocTensor<float>();
    DataCopy(x, gm, 256);
    in.EnQue(x);
    LocalTensor<float> y = in.DeQue<float>();
    (void)y;  // never freed
}

extern "C" __global__ __aicore__ void twin_broken_deque_empty(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    TPipe pipe;
    TQue<QuePosition::VECIN, 2> in;
    pipe.InitBuffer(in, 2, 1024);
    LocalTensor<float> x = in.AllocTensor<float>();
    LocalTensor<float> y = in.DeQue<float>();  // nothing was enqueued
    in.FreeTensor(x);
    in.FreeTensor(y);
}

extern "C" __global__ __aicore__ void twin_broken_double_alloc(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    TPipe pipe;
    TQue<QuePosition::VECIN, 1> in;
    pipe.InitBuffer(in, 1, 1024);
    for (int i = 0; i < 2; ++i) {
        LocalTensor<float> x = in.AllocTensor<float>();  // second round: the first was never freed
        in.EnQue(x);
        (void)in.DeQue<float>();
    }
}

extern "C" __global__ __aicore__ void twin_broken_skip_syncall(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIV_1_0);
    if (GetBlockIdx() == 0) return;  // core 0 never reaches the barrier
    SyncAll();
}

extern "C" __global__ __aicore__ void twin_broken_gm_overrun(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    TPipe pipe;
    TQue<QuePosition::VECIN, 1> in;
    pipe.InitBuffer(in, 1, 2048);
    GlobalTensor<float> gm;
    gm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(buf), 256);
    LocalTensor<float> x = in.AllocTensor<float>();
    DataCopy(x, gm[128], 256);  // runs 128 floats past the end
    in.FreeTensor(x);
}

// Hardware SyncAll in a kernel that never declared a MIX kernel type.
extern "C" __global__ __aicore__ void twin_broken_syncall_not_mix(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    SyncAll();
}

extern "C" __global__ __aicore__ void twin_ok_syncall_mix(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIV_1_0);
    SyncAll();
}

// Software SyncAll over buf as its GM flags (the runner also launches it on a
// buffer it did not zero: twin_broken_soft_syncall_dirty).
extern "C" __global__ __aicore__ void twin_ok_soft_syncall(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    TPipe pipe;
    TBuf<QuePosition::VECCALC> flags;
    pipe.InitBuffer(flags, 32 * 32);
    GlobalTensor<int32_t> gm;
    gm.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(buf), 256);
    SyncAll(gm, flags.Get<int32_t>());
}

// Allocates 16 KiB more UB than the plan the runner gives it (4 KiB).
extern "C" __global__ __aicore__ void twin_broken_ub_plan(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    TPipe pipe;
    TBuf<QuePosition::VECCALC> planned, extra;
    pipe.InitBuffer(planned, 4096);
    pipe.InitBuffer(extra, 16 * 1024);
}

extern "C" __global__ __aicore__ void twin_broken_too_many_buffers(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    TPipe pipe;
    TBuf<QuePosition::VECCALC> bufs[65];
    for (int i = 0; i < 65; ++i) pipe.InitBuffer(bufs[i], 32);
}

// 5000 blocks in one DataCopy: blockCount allows 1..4095.
extern "C" __global__ __aicore__ void twin_broken_copy_params(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    TPipe pipe;
    TQue<QuePosition::VECIN, 1> in;
    pipe.InitBuffer(in, 1, 1024);
    GlobalTensor<float> gm;
    gm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(buf), 256);
    LocalTensor<float> x = in.AllocTensor<float>();
    DataCopy(x, gm, DataCopyParams(5000, 1, 0, 0));
    in.FreeTensor(x);
}

// 300 repeats: repeatTime is a uint8_t, so this would run 44 repeats.
extern "C" __global__ __aicore__ void twin_broken_repeat(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    TPipe pipe;
    TBuf<QuePosition::VECCALC> x;
    pipe.InitBuffer(x, 1024);
    Duplicate(x.Get<float>(), 0.0f, 64, 300, 1, 8);
}

// Compares' count form computes whole 256-byte repeats: 100 floats leave 36 uncompared.
extern "C" __global__ __aicore__ void twin_broken_compares_count(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    TPipe pipe;
    TBuf<QuePosition::VECCALC> x, bits;
    pipe.InitBuffer(x, 1024);
    pipe.InitBuffer(bits, 32);
    Duplicate(x.Get<float>(), 1.0f, 256);
    Compares(bits.Get<uint8_t>(), x.Get<float>(), 0.0f, CMPMODE::LE, 100);
}

// Select's tensor modes stage a block at UB offset 184 KiB on dav-2201: a
// kernel whose buffers reach past it has them overwritten.
extern "C" __global__ __aicore__ void twin_broken_select_scratch(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    TPipe pipe;
    TBuf<QuePosition::VECCALC> x, zeros, bits, big;
    pipe.InitBuffer(x, 1024);
    pipe.InitBuffer(zeros, 1024);
    pipe.InitBuffer(bits, 32);
    pipe.InitBuffer(big, 184 * 1024);  // the total passes 184 KiB
    Duplicate(x.Get<float>(), 1.0f, 256);
    Duplicate(zeros.Get<float>(), 0.0f, 256);
    Compares(bits.Get<uint8_t>(), x.Get<float>(), 0.0f, CMPMODE::LE, 256);
    Select(x.Get<float>(), bits.Get<uint8_t>(), zeros.Get<float>(), x.Get<float>(), SELMODE::VSEL_TENSOR_TENSOR_MODE,
           256);
}

// The gate as the fused kernels use it, with the UB below Select's scratch: passes.
extern "C" __global__ __aicore__ void twin_ok_relu_gate(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    TPipe pipe;
    TBuf<QuePosition::VECCALC> x, zeros, bits;
    pipe.InitBuffer(x, 1024);
    pipe.InitBuffer(zeros, 1024);
    pipe.InitBuffer(bits, 32);
    Duplicate(x.Get<float>(), -1.0f, 256);
    Duplicate(zeros.Get<float>(), 0.0f, 256);
    Compares(bits.Get<uint8_t>(), x.Get<float>(), 0.0f, CMPMODE::LE, 256);
    Select(x.Get<float>(), bits.Get<uint8_t>(), zeros.Get<float>(), x.Get<float>(), SELMODE::VSEL_TENSOR_TENSOR_MODE,
           256);
}

// Pipe hazards: the twin runs pipes in program order, its pipe model finds
// what hardware could reorder (twin_pipes.h).
// A vector op on a TBuf that DataCopy (MTE2) is still filling.
extern "C" __global__ __aicore__ void twin_broken_pipe_mte2_v(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    TPipe pipe;
    TBuf<QuePosition::VECCALC> x;
    pipe.InitBuffer(x, 1024);
    GlobalTensor<float> gm;
    gm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(buf), 256);
    LocalTensor<float> t = x.Get<float>();
    DataCopy(t, gm, 256);
    Adds(t, t, 1.0f, 256);  // needs PipeBarrier<PIPE_ALL> or an MTE2_V event pair first
}

// DataCopy (MTE3) out of a TBuf a vector op (V) is still writing.
extern "C" __global__ __aicore__ void twin_broken_pipe_v_mte3(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    TPipe pipe;
    TBuf<QuePosition::VECCALC> x;
    pipe.InitBuffer(x, 1024);
    GlobalTensor<float> gm;
    gm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(buf), 256);
    LocalTensor<float> t = x.Get<float>();
    Duplicate(t, 2.0f, 256);
    DataCopy(gm, t, 256);
}

// A scalar read right after DeQue: the queue orders MTE2 against V, not S;
// only bisheng's --cce-auto-sync orders it (the twin's default models it on).
extern "C" __global__ __aicore__ void twin_broken_pipe_scalar_after_deque(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    TPipe pipe;
    TQue<QuePosition::VECIN, 1> in;
    pipe.InitBuffer(in, 1, 1024);
    GlobalTensor<float> gm;
    gm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(buf), 256);
    LocalTensor<float> x = in.AllocTensor<float>();
    DataCopy(x, gm, 256);
    in.EnQue(x);
    LocalTensor<float> y = in.DeQue<float>();
    const float first = y.GetValue(0);  // the vendor's kernels put an MTE2_S event before such a read
    (void)first;
    in.FreeTensor(y);
}

// The first two, each with its event pair: no hazard.
extern "C" __global__ __aicore__ void twin_ok_pipe_events(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    TPipe pipe;
    TBuf<QuePosition::VECCALC> x;
    pipe.InitBuffer(x, 1024);
    GlobalTensor<float> gm;
    gm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(buf), 256);
    LocalTensor<float> t = x.Get<float>();
    DataCopy(t, gm, 256);
    const TEventID inToV = GetTPipePtr()->FetchEventID(HardEvent::MTE2_V);
    SetFlag<HardEvent::MTE2_V>(inToV);
    WaitFlag<HardEvent::MTE2_V>(inToV);
    Adds(t, t, 1.0f, 256);
    const TEventID vToOut = GetTPipePtr()->FetchEventID(HardEvent::V_MTE3);
    SetFlag<HardEvent::V_MTE3>(vToOut);
    WaitFlag<HardEvent::V_MTE3>(vToOut);
    DataCopy(gm, t, 256);
}

extern "C" __global__ __aicore__ void twin_ok_copy(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIV_1_0);  // it uses the hardware SyncAll
    TPipe pipe;
    TQue<QuePosition::VECIN, 2> in;
    TQue<QuePosition::VECOUT, 2> out;
    pipe.InitBuffer(in, 2, 128);
    pipe.InitBuffer(out, 2, 128);
    GlobalTensor<float> gm;
    gm.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(buf), 256);
    const uint64_t k = GetBlockIdx();
    LocalTensor<float> x = in.AllocTensor<float>();
    DataCopyExtParams p(1, 5 * sizeof(float), 0, 0, 0);
    DataCopyPad(x, gm[k * 8], p, DataCopyPadExtParams<float>(true, 0, 3, 0.0f));
    in.EnQue(x);
    LocalTensor<float> xi = in.DeQue<float>();
    LocalTensor<float> y = out.AllocTensor<float>();
    Adds(y, xi, 1.0f, 8);
    out.EnQue(y);
    in.FreeTensor(xi);
    SyncAll();
    LocalTensor<float> yo = out.DeQue<float>();
    DataCopyPad(gm[k * 8], yo, p);
    out.FreeTensor(yo);
}

// A vector instruction reading what the one before it wrote: bisheng's
// --cce-auto-sync inserts the PipeBarrier<PIPE_V> between them; without it the
// read is a hazard (twin_set_vector_auto_sync(0)). The ok twin has the barrier.
template <bool kBarrier>
__aicore__ inline void VectorChain() {
    TPipe pipe;
    TBuf<QuePosition::VECCALC> a, b;
    pipe.InitBuffer(a, 1024);
    pipe.InitBuffer(b, 1024);
    LocalTensor<float> ta = a.Get<float>();
    LocalTensor<float> tb = b.Get<float>();
    Duplicate(ta, 1.0f, 256);
    if constexpr (kBarrier) PipeBarrier<PIPE_V>();
    Add(tb, ta, ta, 256);
}

extern "C" __global__ __aicore__ void twin_broken_vector_raw(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    VectorChain<false>();
}

extern "C" __global__ __aicore__ void twin_ok_vector_raw(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
    VectorChain<true>();
}

/*
 * Test-only kernels, each breaking one rule the twin must catch (plus one
 * correct control kernel). Compiled into the twin library, run through
 * twin_run_test_kernel; tests/test_twin_rules.py expects a TwinError naming the
 * kernel and the rule. `buf` is 256 floats.
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

extern "C" __global__ __aicore__ void twin_ok_copy(GM_ADDR buf, GM_ADDR workspace, GM_ADDR tiling) {
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

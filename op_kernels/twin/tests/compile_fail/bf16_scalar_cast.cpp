// Planted break of the twin rule "scalar bf16 cast" (twin_half.h): a scalar
// static_cast of a bfloat16_t, as batch_norm_stats once did with GetValue(0).
// bisheng for dav-2201 rejects it, so the twin must refuse to compile it;
// tests/test_twin_rules.py compiles this file and expects the rule's name.
#include "kernel_operator.h"

using namespace AscendC;

extern "C" __global__ __aicore__ void twin_broken_bf16_scalar_cast(GM_ADDR x, GM_ADDR workspace, GM_ADDR tiling) {
    TPipe pipe;
    TBuf<QuePosition::VECCALC> buf;
    pipe.InitBuffer(buf, 64);
    LocalTensor<bfloat16_t> t = buf.Get<bfloat16_t>();
    const float first = static_cast<float>(t.GetValue(0));
    (void)first;
}

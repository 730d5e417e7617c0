/*
 * batch_norm_gather_stats_with_counts: merges per-rank statistics mean, invstd
 * (float32 (W, C)) with per-rank element counts (float32 (W,)) into the global
 * mean and invstd = 1 / sqrt(var + eps) (float32 (C,)), and updates the optional
 * running stats (float32 (C,)) in place:
 *   running_mean = (1 - momentum) * running_mean + momentum * mean
 *   running_var  = (1 - momentum) * running_var + momentum * var * N / (N - 1)
 *
 * The merge is Chan's: rank by rank, with M2_w = (1/invstd_w^2 - eps) * n_w,
 *   delta = mean_w - mean, mean += delta * n_w / n, M2 += M2_w + delta^2 * n_old * n_w / n,
 * which stays exact when |mean| >> std (no E[x^2] - E[x]^2). Ranks with count 0
 * are skipped. Channels are split over cores, `chunk` channels at a time.
 */
#include "bn_common.h"

using namespace AscendC;

class KernelBatchNormGatherStats {
public:
    __aicore__ inline KernelBatchNormGatherStats() {}

    __aicore__ inline void Init(GM_ADDR mean, GM_ADDR invstd, GM_ADDR runningMean, GM_ADDR runningVar, GM_ADDR counts,
                                GM_ADDR meanOut, GM_ADDR invstdOut, const BnGatherTiling& tiling) {
        t_ = tiling;
        const uint64_t k = GetBlockIdx();
        c0_ = k * t_.chanBase + bn::Min(k, t_.chanRem);
        c1_ = c0_ + t_.chanBase + (k < t_.chanRem ? 1 : 0);
        meanGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(mean), t_.world * t_.c);
        invstdGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(invstd), t_.world * t_.c);
        countsGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(counts), t_.world);
        meanOutGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(meanOut), t_.c);
        invstdOutGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(invstdOut), t_.c);
        if (t_.hasRunningMean) runningMeanGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(runningMean), t_.c);
        if (t_.hasRunningVar) runningVarGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(runningVar), t_.c);

        const uint32_t chunkBytes = static_cast<uint32_t>(bn::AlignUp(uint64_t(t_.chunk) * sizeof(float), bn::BLOCK_BYTES));
        pipe_.InitBuffer(meanAccBuf_, chunkBytes);
        pipe_.InitBuffer(m2AccBuf_, chunkBytes);
        pipe_.InitBuffer(rankMeanBuf_, chunkBytes);
        pipe_.InitBuffer(rankM2Buf_, chunkBytes);
        pipe_.InitBuffer(tmpBuf_, chunkBytes);
        pipe_.InitBuffer(runMeanBuf_, chunkBytes);
        pipe_.InitBuffer(runVarBuf_, chunkBytes);
        pipe_.InitBuffer(countsBuf_, static_cast<uint32_t>(bn::AlignUp(uint64_t(t_.countChunk) * sizeof(float), bn::BLOCK_BYTES)));
    }

    __aicore__ inline void Process() {
        for (uint64_t c = c0_; c < c1_; c += t_.chunk) {
            const uint64_t n = bn::Min(t_.chunk, c1_ - c);
            const float total = Merge(c, n);
            WriteResults(c, n, total);
        }
    }

private:
    // Chan's merge over ranks for channels [c, c + n); returns the total count.
    __aicore__ inline float Merge(uint64_t c, uint64_t nc) {
        const int32_t n = static_cast<int32_t>(nc);
        LocalTensor<float> meanAcc = meanAccBuf_.Get<float>();
        LocalTensor<float> m2Acc = m2AccBuf_.Get<float>();
        LocalTensor<float> rankMean = rankMeanBuf_.Get<float>();
        LocalTensor<float> rankM2 = rankM2Buf_.Get<float>();
        LocalTensor<float> tmp = tmpBuf_.Get<float>();
        LocalTensor<float> counts = countsBuf_.Get<float>();
        Duplicate(meanAcc, 0.0f, n);
        Duplicate(m2Acc, 0.0f, n);
        float total = 0.0f;
        for (uint64_t w0 = 0; w0 < t_.world; w0 += t_.countChunk) {
            const uint64_t nw = bn::Min(t_.countChunk, t_.world - w0);
            bn::CopyChannelsIn(counts, countsGm_, w0, nw);
            PipeBarrier<PIPE_ALL>();
            for (uint64_t w = w0; w < w0 + nw; ++w) {
                const float cnt = counts.GetValue(w - w0);
                if (!(cnt > 0.0f)) continue;
                bn::CopyChannelsIn(rankMean, meanGm_, w * t_.c + c, nc);
                bn::CopyChannelsIn(rankM2, invstdGm_, w * t_.c + c, nc);
                PipeBarrier<PIPE_ALL>();
                // M2_w = (1 / invstd^2 - eps) * n_w
                Mul(rankM2, rankM2, rankM2, n);
                bn::OneOver(rankM2, rankM2, tmp, n);
                Adds(rankM2, rankM2, -t_.eps, n);
                Muls(rankM2, rankM2, cnt, n);
                const float newTotal = total + cnt;
                const float wNew = cnt / newTotal;
                Sub(tmp, rankMean, meanAcc, n);            // delta
                Muls(rankMean, tmp, wNew, n);
                Add(meanAcc, meanAcc, rankMean, n);        // mean += delta * n_w / n
                Mul(tmp, tmp, tmp, n);
                Muls(tmp, tmp, total * wNew, n);           // delta^2 * n_old * n_w / n
                Add(m2Acc, m2Acc, rankM2, n);
                Add(m2Acc, m2Acc, tmp, n);
                PipeBarrier<PIPE_ALL>();
                total = newTotal;
            }
        }
        return total;
    }

    __aicore__ inline void WriteResults(uint64_t c, uint64_t nc, float total) {
        const int32_t n = static_cast<int32_t>(nc);
        const float m = t_.momentum;
        LocalTensor<float> meanAcc = meanAccBuf_.Get<float>();
        LocalTensor<float> var = m2AccBuf_.Get<float>();
        LocalTensor<float> tmp = tmpBuf_.Get<float>();
        Muls(var, var, 1.0f / total, n);  // biased variance
        if (t_.hasRunningMean) {
            LocalTensor<float> rm = runMeanBuf_.Get<float>();
            bn::CopyChannelsIn(rm, runningMeanGm_, c, nc);
            PipeBarrier<PIPE_ALL>();
            Muls(rm, rm, 1.0f - m, n);
            Muls(tmp, meanAcc, m, n);
            Add(rm, rm, tmp, n);
            PipeBarrier<PIPE_ALL>();
            bn::CopyChannelsOut(runningMeanGm_, rm, c, nc);
        }
        if (t_.hasRunningVar) {
            LocalTensor<float> rv = runVarBuf_.Get<float>();
            bn::CopyChannelsIn(rv, runningVarGm_, c, nc);
            PipeBarrier<PIPE_ALL>();
            Muls(rv, rv, 1.0f - m, n);
            Muls(tmp, var, m * total / (total - 1.0f), n);  // unbiased variance into running_var
            Add(rv, rv, tmp, n);
            PipeBarrier<PIPE_ALL>();
            bn::CopyChannelsOut(runningVarGm_, rv, c, nc);
        }
        bn::InvStdInPlace(var, tmp, t_.eps, n);
        PipeBarrier<PIPE_ALL>();
        bn::CopyChannelsOut(meanOutGm_, meanAcc, c, nc);
        bn::CopyChannelsOut(invstdOutGm_, var, c, nc);
        PipeBarrier<PIPE_ALL>();
    }

    TPipe pipe_;
    TBuf<QuePosition::VECCALC> meanAccBuf_, m2AccBuf_, rankMeanBuf_, rankM2Buf_, tmpBuf_, runMeanBuf_, runVarBuf_, countsBuf_;
    GlobalTensor<float> meanGm_, invstdGm_, countsGm_, meanOutGm_, invstdOutGm_, runningMeanGm_, runningVarGm_;
    BnGatherTiling t_;
    uint64_t c0_ = 0, c1_ = 0;
};

extern "C" __global__ __aicore__ void batch_norm_gather_stats_with_counts(GM_ADDR mean, GM_ADDR invstd,
                                                                          GM_ADDR runningMean, GM_ADDR runningVar,
                                                                          GM_ADDR counts, GM_ADDR meanOut,
                                                                          GM_ADDR invstdOut, GM_ADDR workspace,
                                                                          GM_ADDR tiling) {
    (void)workspace;
    BnGatherTiling t;
    bn::LoadTiling(t, tiling);
    KernelBatchNormGatherStats op;
    op.Init(mean, invstd, runningMean, runningVar, counts, meanOut, invstdOut, t);
    op.Process();
}

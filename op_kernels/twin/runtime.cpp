// Twin runtime: one thread per emulated vector core, the SyncAll barrier, GM
// buffer registry with byte counters, and first-failure reporting.
#include "twin_runtime.h"
#include "twin_pipes.h"
#include "twin_timing_sim.h"

#include <cstdlib>
#include <cstring>
#include <thread>

namespace twin {

namespace {

thread_local CoreContext* tlsCore = nullptr;

// Thrown into cores waiting at SyncAll after another core failed; not an error itself.
struct Stopped {};

std::vector<Traffic> gLastTraffic;
LaunchTime gLastTime;

constexpr uint64_t kZeroCheckBytes = 1 << 20;  // larger buffers are not scanned (activations)

const BnSocInfo* gSoc = nullptr;

const BnSocInfo* SocFromEnvironment() {
    const char* env = std::getenv("NPU_SYNCBN_SOC");
    const BnSocInfo* s = BnSocFind(env && *env ? env : BN_DEFAULT_SOC);
    return s ? s : BnSocFind(BN_DEFAULT_SOC);
}

bool AllZero(const uint8_t* p, uint64_t bytes) {
    for (uint64_t i = 0; i < bytes; ++i) {
        if (p[i] != 0) return false;
    }
    return true;
}

}  // namespace

CoreContext::CoreContext() = default;
CoreContext::~CoreContext() = default;

namespace {
std::atomic<bool> gAutoSync{true};
}  // namespace

bool AutoSync() { return gAutoSync.load(std::memory_order_relaxed); }
void SetAutoSync(bool on) { gAutoSync = on; }

std::atomic<bool> gVectorAutoSync{true};
bool VectorAutoSync() { return gVectorAutoSync.load(std::memory_order_relaxed); }
void SetVectorAutoSync(bool on) { gVectorAutoSync = on; }

PipeState& Pipes() {
    CoreContext& core = Core();
    if (!core.pipes) core.pipes = std::make_unique<PipeState>();
    return *core.pipes;
}

bool SetSoc(const std::string& name) {
    const BnSocInfo* s = name.empty() ? SocFromEnvironment() : BnSocFind(name.c_str());
    if (s == nullptr) return false;
    gSoc = s;
    return true;
}

const BnSocInfo& CurrentSoc() {
    if (gSoc == nullptr) gSoc = SocFromEnvironment();
    return *gSoc;
}

void Fail(const std::string& rule, const std::string& detail) { throw Violation(rule, detail); }

CoreContext& Core() {
    if (tlsCore == nullptr) {
        // Kernel code outside a launch: a bug of the caller, never of the kernel.
        throw Violation("no launch", "AscendC API used outside a twin launch");
    }
    return *tlsCore;
}

bool InKernel() { return tlsCore != nullptr; }

GmBuffer* FindGm(const void* p, uint64_t bytes) {
    const uint8_t* q = static_cast<const uint8_t*>(p);
    for (auto& b : Core().launch->buffers) {
        if (q >= b->base && q + bytes <= b->base + b->bytes && b->bytes > 0) return b.get();
    }
    return nullptr;
}

void RecordBursts(GmBuffer* buf, uint64_t bytes, uint64_t count, bool joined) {
    if (count == 0 || bytes == 0) return;
    std::lock_guard<std::mutex> lock(buf->burstMu);
    if (joined) {
        buf->bursts[bytes * count] += 1;
    } else {
        buf->bursts[bytes] += count;
    }
}

void Defer(const std::string& rule, const std::string& detail) {
    CoreContext& core = Core();
    if (core.deferred.empty()) core.deferred = rule + ": " + detail;
}

void Barrier::Reset(uint32_t cores) {
    std::lock_guard<std::mutex> lock(mu_);
    cores_ = cores;
    waiting_ = exited_ = 0;
    aborted_ = stranded_ = false;
}

void Barrier::Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    if (aborted_) throw Stopped{};
    if (exited_ > 0) {
        stranded_ = true;
        cv_.notify_all();
        Fail("SyncAll imbalance", "a core reached SyncAll after another core had finished the kernel");
    }
    const uint64_t gen = generation_;
    if (++waiting_ == cores_) {
        waiting_ = 0;
        ++generation_;
        cv_.notify_all();
        return;
    }
    cv_.wait(lock, [&] { return generation_ != gen || aborted_ || stranded_; });
    if (generation_ != gen) return;
    if (stranded_ && !aborted_) {
        Fail("SyncAll imbalance", "core waits at SyncAll but another core finished without reaching it");
    }
    throw Stopped{};
}

void Barrier::Exit() {
    std::lock_guard<std::mutex> lock(mu_);
    ++exited_;
    if (waiting_ > 0) {
        stranded_ = true;
        cv_.notify_all();
    }
}

void Barrier::Abort() {
    std::lock_guard<std::mutex> lock(mu_);
    aborted_ = true;
    cv_.notify_all();
}

std::string Launch(const std::string& kernel, uint32_t blockDim, const std::vector<GmArg>& args,
                   const std::function<void()>& body, uint64_t ubPlan) {
    const BnSocInfo& soc = CurrentSoc();
    if (blockDim < 1 || blockDim > soc.vectorCores) {
        // On hardware more blocks than cores run in rounds, and a barrier kernel
        // then waits for blocks that cannot start: a hang, so always an error.
        return "kernel '" + kernel + "' core 0: block_dim over cores: block_dim " + std::to_string(blockDim) +
               " outside 1.." + std::to_string(soc.vectorCores) + ", the vector cores of " + soc.name;
    }
    LaunchState state;
    state.kernel = kernel;
    state.blockDim = blockDim;
    state.soc = &soc;
    state.ubPlan = ubPlan;
    for (const GmArg& a : args) {
        auto b = std::make_unique<GmBuffer>();
        b->name = a.name;
        b->base = static_cast<uint8_t*>(a.ptr);
        b->bytes = a.ptr ? a.bytes : 0;
        b->zeroAtLaunch = b->bytes > 0 && b->bytes <= kZeroCheckBytes && AllZero(b->base, b->bytes);
        state.buffers.push_back(std::move(b));
    }
    state.barrier.Reset(blockDim);
    const bool timed = CurrentTimingMode() != kTimingOff;
    std::vector<std::unique_ptr<TimeTrace>> traces(blockDim);

    auto record = [&state](uint32_t core, const std::string& what) {
        std::lock_guard<std::mutex> lock(state.errorMu);
        if (state.error.empty()) state.error = "kernel '" + state.kernel + "' core " + std::to_string(core) + ": " + what;
    };
    auto runCore = [&](uint32_t k) {
        CoreContext ctx;
        ctx.launch = &state;
        ctx.blockIdx = k;
        ctx.ub = static_cast<uint8_t*>(std::aligned_alloc(kBlockBytes, kUbBytes));
        std::memset(ctx.ub, 0xFF, kUbBytes);  // poison: unwritten UB reads as NaN
        if (timed) ctx.timing = std::make_unique<TimeTrace>();
        tlsCore = &ctx;
        try {
            body();
            if (state.ubPlan != 0 && ctx.ubUsed != state.ubPlan) {
                Fail("UB plan mismatch", "the kernel allocated " + std::to_string(ctx.ubUsed) +
                                             " bytes of UB, the host tiling planned " + std::to_string(state.ubPlan));
            }
            if (!ctx.deferred.empty()) {
                record(k, ctx.deferred);
                state.barrier.Abort();
            }
        } catch (const Violation& v) {
            record(k, v.what());
            state.barrier.Abort();
        } catch (const Stopped&) {
        } catch (const std::exception& e) {
            record(k, std::string("internal error: ") + e.what());
            state.barrier.Abort();
        }
        state.barrier.Exit();
        traces[k] = std::move(ctx.timing);
        tlsCore = nullptr;
        std::free(ctx.ub);
    };

    if (blockDim == 1) {
        runCore(0);
    } else {
        std::vector<std::thread> threads;
        threads.reserve(blockDim);
        for (uint32_t k = 0; k < blockDim; ++k) threads.emplace_back(runCore, k);
        for (auto& t : threads) t.join();
    }

    gLastTime = LaunchTime{};
    if (timed && state.error.empty()) {
        std::vector<std::vector<Instr>> cores(blockDim);
        for (uint32_t k = 0; k < blockDim; ++k) cores[k] = std::move(traces[k]->Instrs());
        gLastTime = PlayLaunch(cores, soc.name);
        gLastTime.kernel = kernel;
        if (!gLastTime.error.empty()) state.error = "kernel '" + kernel + "': " + gLastTime.error;
    }

    gLastTraffic.clear();
    for (auto& b : state.buffers) gLastTraffic.push_back({b->name, b->read.load(), b->written.load(), b->bursts});
    return state.error;
}

const std::vector<Traffic>& LastTraffic() { return gLastTraffic; }

const LaunchTime& LastLaunchTime() { return gLastTime; }

}  // namespace twin

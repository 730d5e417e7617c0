// Runtime of the CPU twin: emulated vector cores (one thread each, so SyncAll is
// a real barrier), their UB (size and core count from the SoC table of
// host/soc.h, selected with twin_set_soc or NPU_SYNCBN_SOC), the GM buffers of
// one launch (bounds, byte counts, zeroed-at-launch flags) and the rule checks. A broken rule throws twin::Violation in the
// core that broke it; the launch stops every core and reports the first one.
#ifndef NPU_SYNCBN_TWIN_RUNTIME_H
#define NPU_SYNCBN_TWIN_RUNTIME_H

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "../../host/soc.h"

namespace twin {

constexpr uint64_t kUbBytes = 192 * 1024;  // largest UB of the SoC table: what a core's arena holds
constexpr uint64_t kBlockBytes = 32;       // UB data block: alignment unit of copies and vector operands
constexpr uint32_t kMaxCores = 48;         // largest core count of the SoC table
constexpr uint32_t kMaxBuffers = 64;       // TQue/TBuf buffers one kernel may use (TPipe::InitBuffer docs)
constexpr uint64_t kSelectScratchOffset = 184 * 1024;  // Select's scratch block on dav-2201 (TMP_UB_OFFSET)

// The SoC launches are checked against: "" selects NPU_SYNCBN_SOC, else
// BN_DEFAULT_SOC. Returns false (and keeps the old one) for an unknown name.
bool SetSoc(const std::string& name);
const BnSocInfo& CurrentSoc();

// A broken kernel rule: `rule` is a short stable name (tests match on it).
struct Violation : std::runtime_error {
    std::string rule;
    Violation(const std::string& r, const std::string& detail) : std::runtime_error(r + ": " + detail), rule(r) {}
};

[[noreturn]] void Fail(const std::string& rule, const std::string& detail);

// One GM argument of a launch.
struct GmBuffer {
    std::string name;
    uint8_t* base = nullptr;
    uint64_t bytes = 0;
    std::atomic<uint64_t> read{0};
    std::atomic<uint64_t> written{0};
    bool zeroAtLaunch = false;  // every byte 0 before the launch (checked for buffers up to 1 MiB)
    std::mutex burstMu;
    std::map<uint64_t, uint64_t> bursts;  // bytes of one contiguous GM run of a copy -> how many
};

// Counts the GM bursts of one copy: `count` blocks of `bytes` each, or one
// burst of count * bytes when `joined` (the blocks touch in GM and in UB, so
// the copy is one contiguous run on both sides).
void RecordBursts(GmBuffer* buf, uint64_t bytes, uint64_t count, bool joined);

// All-core barrier that can be broken: when a core fails, or finishes while
// others wait, the waiters leave instead of hanging.
class Barrier {
public:
    void Reset(uint32_t cores);
    void Wait();    // SyncAll
    void Exit();    // a core finished its kernel
    void Abort();   // a core failed
private:
    std::mutex mu_;
    std::condition_variable cv_;
    uint32_t cores_ = 0, waiting_ = 0, exited_ = 0;
    uint64_t generation_ = 0;
    bool aborted_ = false, stranded_ = false;
};

struct LaunchState {
    std::string kernel;
    uint32_t blockDim = 0;
    const BnSocInfo* soc = nullptr;
    uint64_t ubPlan = 0;  // UB bytes the host tiling planned for each core (0: no plan to check)
    std::vector<std::unique_ptr<GmBuffer>> buffers;
    Barrier barrier;
    std::mutex errorMu;
    std::string error;  // first failure: "kernel '<name>' core <k>: <rule>: <detail>"
};

// The pipes a core's instructions run on (the pipe model, twin_pipes.h, and
// the timing model, twin_timing.h).
enum Pipe : uint8_t { kPipeS = 0, kPipeV, kPipeMte2, kPipeMte3, kPipeCount, kPipeNone = 255 };

struct PipeState;  // twin_pipes.h
class TimeTrace;   // twin_timing.h

struct CoreContext {
    LaunchState* launch = nullptr;
    uint32_t blockIdx = 0;
    uint8_t* ub = nullptr;  // kUbBytes, 32-byte aligned
    uint64_t ubUsed = 0;
    uint32_t ubBuffers = 0;  // buffers carved by InitBuffer
    int kernelType = -1;     // KERNEL_TASK_TYPE_DEFAULT, -1 when not declared
    std::unique_ptr<PipeState> pipes;  // which pipe touched each UB block (twin_pipes.h)
    std::unique_ptr<TimeTrace> timing; // the core's instructions for the timing model (twin_timing.h), when on
    CoreContext();
    ~CoreContext();
    std::string deferred;   // violation found in a destructor (cannot throw there)
};

CoreContext& Core();
bool InKernel();

// Buffer of the current launch holding [p, p + bytes), or nullptr.
GmBuffer* FindGm(const void* p, uint64_t bytes);

// Records a violation found where throwing is not allowed (destructors).
void Defer(const std::string& rule, const std::string& detail);

struct GmArg {
    const char* name;
    void* ptr;
    uint64_t bytes;
};

struct Traffic {
    std::string name;
    uint64_t read, written;
    std::map<uint64_t, uint64_t> bursts;  // burst bytes -> count
};

// Runs `body` once per emulated core on blockDim threads. Returns "" on success,
// else the first failure message (the kernel name, the core and the rule).
// ubPlan: the UB bytes the host tiling planned per core; a core whose
// InitBuffer total differs breaks "UB plan mismatch" (0: not checked).
std::string Launch(const std::string& kernel, uint32_t blockDim, const std::vector<GmArg>& args,
                   const std::function<void()>& body, uint64_t ubPlan = 0);

// Per-buffer byte counts of the last launch.
const std::vector<Traffic>& LastTraffic();

}  // namespace twin

#endif  // NPU_SYNCBN_TWIN_RUNTIME_H

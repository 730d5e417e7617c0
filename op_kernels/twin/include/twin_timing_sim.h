// Timing model of the CPU twin, the playing half: the traces every core
// recorded in one launch (twin_timing.h) played together, as the cores run
// concurrently on the chip (the twin may have run them one after another).
// An event simulation: an instruction starts when everything it waits for has
// ended; a fixed-cost instruction ends its cost later; a DMA spends its
// latency, then moves its effective bytes at its core's rate, all active DMAs
// of all cores scaled down together whenever their HBM traffic would exceed
// the chip's HBM bandwidth; a SyncAll ends when every core has reached it.
// The kernel ends with its slowest core.
#ifndef NPU_SYNCBN_TWIN_TIMING_SIM_H
#define NPU_SYNCBN_TWIN_TIMING_SIM_H

#include <array>
#include <cstring>
#include <limits>
#include <queue>
#include <string>
#include <vector>

#include "twin_timing.h"

namespace twin {

// What one launch costs in the model.
struct LaunchTime {
    std::string kernel;
    double ns = 0;                       // kernel: the slowest core's last instruction
    uint32_t cores = 0;                  // cores of the launch
    uint32_t busyCores = 0;              // cores that moved any GM byte
    double meanCoreNs = 0;               // mean over busy cores of their end
    double pipeBusyNs[kTimePipes] = {};  // per pipe, the largest busy time of one core
    double hbmBytes = 0;                 // bytes all DMAs moved
    uint64_t instrs = 0;
    uint64_t barriers = 0;               // PIPE_ALL / SyncAll nodes on the busiest core
    std::string error;                   // a trace the model could not play (a bug of the model)
};

namespace timing {

inline double HbmBytesPerNs(const char* soc) {
    for (const SocTiming& s : kSocTiming) {
        if (std::strcmp(s.name, soc) == 0) return s.hbmGBps;
    }
    return kDefaultHbmGBps;
}

class Player {
public:
    Player(std::vector<std::vector<Instr>>& cores, double hbm) : cores_(cores), hbm_(hbm) {
        const size_t n = cores.size();
        end_.resize(n);
        start_.resize(n);
        queues_.resize(n);
        head_.assign(n, {});
        for (size_t k = 0; k < n; ++k) {
            end_[k].assign(cores[k].size(), -1.0);
            start_[k].assign(cores[k].size(), -1.0);
            for (size_t i = 0; i < cores[k].size(); ++i) queues_[k][cores[k][i].pipe].push_back(int32_t(i));
        }
    }

    LaunchTime Play() {
        LaunchTime out;
        out.cores = static_cast<uint32_t>(cores_.size());
        for (size_t k = 0; k < cores_.size(); ++k) Advance(k);
        while (true) {
            double demand = 0;
            for (const Active& a : active_) demand += a.rate * a.hbmPerWork;
            const double share = demand > hbm_ ? hbm_ / demand : 1.0;
            double next = events_.empty() ? kInf : events_.top().t;
            for (const Active& a : active_) next = std::min(next, now_ + a.left / (a.rate * share));
            if (next == kInf) break;
            const double dt = next - now_;
            now_ = next;
            std::vector<size_t> touched;
            for (size_t j = 0; j < active_.size();) {
                Active& a = active_[j];
                a.left -= dt * a.rate * share;
                if (a.left <= 1e-9 * a.work + 1e-12) {
                    Finish(a.core, a.idx, touched);
                    active_[j] = active_.back();
                    active_.pop_back();
                } else {
                    ++j;
                }
            }
            while (!events_.empty() && events_.top().t <= now_) {
                const Event e = events_.top();
                events_.pop();
                const Instr& in = cores_[e.core][e.idx];
                if (in.kind == kDma && e.latency) {
                    active_.push_back({e.core, e.idx, in.work, in.work, in.rate, in.hbmPerWork});
                } else {
                    Finish(e.core, e.idx, touched);
                }
            }
            for (size_t k : touched) Advance(k);
        }
        Summarise(out);
        return out;
    }

private:
    static constexpr double kInf = std::numeric_limits<double>::infinity();
    struct Event {
        double t;
        uint32_t core;
        int32_t idx;
        bool latency;  // a DMA's latency ends: it starts moving bytes
        bool operator<(const Event& o) const { return t > o.t; }
    };
    struct Active {
        uint32_t core;
        int32_t idx;
        double left, work, rate, hbmPerWork;
    };

    bool Ready(size_t k, const Instr& in) const {
        for (int p = 0; p < kTimePipes; ++p) {
            if (in.dep[p] >= 0 && end_[k][in.dep[p]] < 0) return false;
        }
        return true;
    }

    void Finish(size_t k, int32_t i, std::vector<size_t>& touched) {
        end_[k][i] = now_;
        touched.push_back(k);
    }

    // Starts every instruction of core k that can start now (zero-cost nodes end at once).
    void Advance(size_t k) {
        bool moved = true;
        while (moved) {
            moved = false;
            for (int p = 0; p < kTimePipes; ++p) {
                size_t& h = head_[k][p];
                if (h >= queues_[k][p].size()) continue;
                const int32_t i = queues_[k][p][h];
                const Instr& in = cores_[k][i];
                if (!Ready(k, in)) continue;
                ++h;
                start_[k][i] = now_;
                moved = true;
                if (in.kind == kSync) {
                    Arrive(k, i, in.sync);
                } else if (in.kind == kDma) {
                    events_.push({now_ + in.ns, uint32_t(k), i, true});
                } else if (in.ns <= 0) {
                    end_[k][i] = now_;
                } else {
                    events_.push({now_ + in.ns, uint32_t(k), i, false});
                }
            }
        }
    }

    // SyncAll number s of core k: ends when every core has arrived.
    void Arrive(size_t k, int32_t i, uint32_t s) {
        if (s >= waiting_.size()) waiting_.resize(s + 1);
        waiting_[s].push_back({uint32_t(k), i});
        if (waiting_[s].size() < cores_.size()) return;
        for (const auto& w : waiting_[s]) end_[w.first][w.second] = now_;
        for (const auto& w : waiting_[s]) {
            if (w.first != k) Advance(w.first);
        }
    }

    void Summarise(LaunchTime& out) {
        double sumEnd = 0, worst = -1;
        for (size_t k = 0; k < cores_.size(); ++k) {
            double last = 0, busy[kTimePipes] = {};
            bool dma = false;
            uint64_t nodes = 0;
            for (size_t i = 0; i < cores_[k].size(); ++i) {
                const Instr& in = cores_[k][i];
                if (end_[k][i] < 0) {
                    out.error = "timing model: core " + std::to_string(k) + " instruction " + std::to_string(i) +
                                " never ran (a dependency cycle)";
                    return;
                }
                last = std::max(last, end_[k][i]);
                busy[in.pipe] += end_[k][i] - start_[k][i];
                if (in.kind == kDma && in.bytes > 0) {
                    dma = true;
                    out.hbmBytes += in.bytes;
                }
                nodes += in.pipe == kNode;
            }
            for (int p = 0; p < kTimePipes; ++p) out.pipeBusyNs[p] = std::max(out.pipeBusyNs[p], busy[p]);
            out.instrs += cores_[k].size();
            if (dma) {
                ++out.busyCores;
                sumEnd += last;
            }
            if (last > worst) {
                worst = last;
                out.barriers = nodes;
            }
            out.ns = std::max(out.ns, last);
        }
        out.meanCoreNs = out.busyCores ? sumEnd / out.busyCores : 0;
    }

    std::vector<std::vector<Instr>>& cores_;
    double hbm_;
    double now_ = 0;
    std::vector<std::vector<double>> end_, start_;
    std::vector<std::array<std::vector<int32_t>, kTimePipes>> queues_;
    std::vector<std::array<size_t, kTimePipes>> head_;
    std::priority_queue<Event> events_;
    std::vector<Active> active_;
    std::vector<std::vector<std::pair<uint32_t, int32_t>>> waiting_;
};

}  // namespace timing

// Plays the traces of one launch's cores on SoC `soc` (its HBM bandwidth).
inline LaunchTime PlayLaunch(std::vector<std::vector<Instr>>& cores, const char* soc) {
    return timing::Player(cores, timing::HbmBytesPerNs(soc)).Play();
}

// The model's time of the last launch (timing on: twin_timing.h's SetTimingMode).
const LaunchTime& LastLaunchTime();

}  // namespace twin

#endif  // NPU_SYNCBN_TWIN_TIMING_SIM_H

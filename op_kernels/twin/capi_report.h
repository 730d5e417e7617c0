// What the twin's C ABI keeps of the last op (defined in capi.cpp): its
// error text, block_dim, GM traffic and modelled launch times. Shared by the
// files of the C ABI (capi.cpp, capi_timing.cpp).
#ifndef NPU_SYNCBN_TWIN_CAPI_REPORT_H
#define NPU_SYNCBN_TWIN_CAPI_REPORT_H

#include <cstdint>
#include <string>
#include <vector>

#include "twin_timing_sim.h"

namespace twin_capi {

// Records the launch that just ended (its error, traffic and modelled time)
// as the last op's; 0 when it succeeded, 1 when a kernel broke a rule.
int Report(const std::string& err);
void SetBlockDim(uint32_t blockDim);
void SetError(const std::string& err);
// The modelled time of each launch of the last op (timing on).
const std::vector<twin::LaunchTime>& Times();

}  // namespace twin_capi

#endif  // NPU_SYNCBN_TWIN_CAPI_REPORT_H

// SoC table of the kernels' platform limits; see soc.h.
#include "soc.h"

#include <cstring>

namespace {

// Vector cores per SoC from the public product specs (Atlas A2 / A3 training
// series); all of them have 192 KiB of UB per vector core.
const BnSocInfo kSocs[] = {
    {"Ascend910B1", 48, 192 * 1024},
    {"Ascend910B2", 48, 192 * 1024},
    {"Ascend910B3", 40, 192 * 1024},
    {"Ascend910B4", 40, 192 * 1024},
    {"Ascend910_93", 48, 192 * 1024},
};

}  // namespace

const BnSocInfo* BnSocFind(const char* name) {
    if (name == nullptr) return nullptr;
    const BnSocInfo* best = nullptr;
    size_t bestLen = 0;
    for (const BnSocInfo& s : kSocs) {
        const size_t len = std::strlen(s.name);
        if (std::strcmp(name, s.name) == 0) return &s;
        if (len > bestLen && std::strncmp(name, s.name, len) == 0) {
            best = &s;
            bestLen = len;
        }
    }
    return best;
}

uint32_t BnSocCount() { return sizeof(kSocs) / sizeof(kSocs[0]); }

const BnSocInfo* BnSocAt(uint32_t i) { return i < BnSocCount() ? &kSocs[i] : nullptr; }

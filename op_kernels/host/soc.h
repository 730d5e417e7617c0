/*
 * The Ascend SoCs the kernels are built for (one c220 build, __NPU_ARCH__ 2201,
 * serves all of them) with the two platform limits the tiling depends on: the
 * vector cores a launch may use and the UB bytes per vector core. Plain C++:
 * the CPU twin takes its limits from this table, and the NPU launch glue uses
 * it where the runtime cannot be asked.
 */
#ifndef NPU_SYNCBN_HOST_SOC_H
#define NPU_SYNCBN_HOST_SOC_H

#include <cstdint>

struct BnSocInfo {
    const char* name;      // as CANN spells it, e.g. "Ascend910B4"; a family prefix for 910_93
    uint32_t vectorCores;  // physical AIV cores: a barrier kernel may never launch more blocks
    uint32_t ubBytes;      // UB per vector core
};

// SoC the twin emulates and the glue assumes when nothing else is known.
static const char* const BN_DEFAULT_SOC = "Ascend910B2";

// Bytes of UB the tilings leave unused, as the vendor's own tilings keep a
// reserve (they keep 96 B to 2 KiB); the kernels' plans are checked exactly.
static const uint32_t BN_UB_RESERVE_BYTES = 1024;

// The entry for `name`: an exact match, else the longest table name that is a
// prefix of it ("Ascend910_9391" -> "Ascend910_93", "Ascend910B2C" ->
// "Ascend910B2"); nullptr for a SoC the table does not know.
const BnSocInfo* BnSocFind(const char* name);

// Table entries, for listing them in errors.
uint32_t BnSocCount();
const BnSocInfo* BnSocAt(uint32_t i);

#endif  // NPU_SYNCBN_HOST_SOC_H

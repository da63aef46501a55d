// The selector attributes of the custom calls: `policy`, `init_kind`,
// `optimizer` and `mode` travel as int32 attributes whose values are these
// enumerations. Each is defined here once, with
//   kNum<Enum>        its number of values; the values are 0 .. kNum<Enum>-1,
//   IsValid<Enum>(v)  the range check every handler applies (table_args.h),
//                     CPU and CUDA alike, before anything runs,
//   k<Enum>Names      the name of each value, indexed by value: the strings
//                     the Python package accepts. The nanobind modules export
//                     them as CONSTANTS["POLICIES"], ["INIT_KINDS"],
//                     ["OPTIMIZERS"] and ["EXPORT_MODES"] ({name: value}), so
//                     Python never retypes a number.
// Adding a value: append the enumerator, bump the count (a static_assert
// checks the last enumerator against it), append its name, then give it a
// case in every switch over the enum (optim.h, init.h, erase.h, probe.h).
#pragma once

#include <cstdint>

#include "hypereca/common.h"

namespace hypereca {

// Score policies for eviction (attribute `policy`).
enum class ScorePolicy : int32_t {
  kLru = 0,  // score = step of last access
  kLfu = 1,  // score = access count (ties: older last access first)
};
constexpr int32_t kNumScorePolicies = 2;
constexpr const char* kScorePolicyNames[] = {"lru", "lfu"};

// Row initializers: a pure function of (seed, key, column) (attribute
// `init_kind`; see init.h).
enum class InitKind : int32_t {
  kUniform = 0,   // U[-scale, scale) with 24-bit resolution
  kNormal = 1,    // scale * Irwin-Hall(12) - bounded approximation of N(0,1)
  kConstant = 2,  // every element = scale
};
constexpr int32_t kNumInitKinds = 3;
constexpr const char* kInitKindNames[] = {"uniform", "normal", "constant"};

// Fused sparse optimizers (attribute `optimizer`; see optim.h).
enum class OptimizerKind : int32_t {
  kSgd = 0,
  kAdagrad = 1,
  kRowwiseAdagrad = 2,
  kAdam = 3,
  kFtrl = 4,
};
constexpr int32_t kNumOptimizerKinds = 5;
constexpr const char* kOptimizerKindNames[] = {"sgd", "adagrad", "rowwise_adagrad", "adam",
                                               "ftrl"};

// Row predicates of export and erase_if (attribute `mode`; see erase.h).
enum class ExportMode : int32_t {
  kAll = 0,
  kScoreBelow = 1,    // score < threshold
  kScoreAtLeast = 2,  // score >= threshold
};
constexpr int32_t kNumExportModes = 3;
constexpr const char* kExportModeNames[] = {"all", "below", "at_least"};

static_assert(static_cast<int32_t>(ScorePolicy::kLfu) == kNumScorePolicies - 1 &&
                  sizeof(kScorePolicyNames) / sizeof(kScorePolicyNames[0]) ==
                      kNumScorePolicies,
              "ScorePolicy: count, last enumerator and names disagree");
static_assert(static_cast<int32_t>(InitKind::kConstant) == kNumInitKinds - 1 &&
                  sizeof(kInitKindNames) / sizeof(kInitKindNames[0]) == kNumInitKinds,
              "InitKind: count, last enumerator and names disagree");
static_assert(static_cast<int32_t>(OptimizerKind::kFtrl) == kNumOptimizerKinds - 1 &&
                  sizeof(kOptimizerKindNames) / sizeof(kOptimizerKindNames[0]) ==
                      kNumOptimizerKinds,
              "OptimizerKind: count, last enumerator and names disagree");
static_assert(static_cast<int32_t>(ExportMode::kScoreAtLeast) == kNumExportModes - 1 &&
                  sizeof(kExportModeNames) / sizeof(kExportModeNames[0]) == kNumExportModes,
              "ExportMode: count, last enumerator and names disagree");

HYPERECA_HD bool IsValidScorePolicy(int32_t v) { return v >= 0 && v < kNumScorePolicies; }
HYPERECA_HD bool IsValidInitKind(int32_t v) { return v >= 0 && v < kNumInitKinds; }
HYPERECA_HD bool IsValidOptimizer(int32_t v) { return v >= 0 && v < kNumOptimizerKinds; }
HYPERECA_HD bool IsValidExportMode(int32_t v) { return v >= 0 && v < kNumExportModes; }

}  // namespace hypereca

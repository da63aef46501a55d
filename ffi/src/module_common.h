// Pieces shared by the CPU and CUDA nanobind modules.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include <cstddef>
#include <string>

#include "hypereca/common.h"
#include "hypereca/enums.h"
#include "xla/ffi/api/c_api.h"

#ifndef HYPERECA_JAXLIB_VERSION
#error "HYPERECA_JAXLIB_VERSION must be defined by the build (jaxlib built against)"
#endif

// Every custom call: X(HandlerStem, "target name"). Each platform's module
// defines the handlers Hypereca<Stem>Cpu / Hypereca<Stem>Cuda and registers
// the whole list, so the two platforms always offer the same ops.
#define HYPERECA_FOR_EACH_OP(X)                  \
  X(FindOrInsert, "hypereca_find_or_insert")     \
  X(Find, "hypereca_find")                       \
  X(Gather, "hypereca_gather")                   \
  X(GatherTagged, "hypereca_gather_tagged")      \
  X(ApplyGradients, "hypereca_apply_gradients")  \
  X(Erase, "hypereca_erase")                     \
  X(EraseIf, "hypereca_erase_if")                \
  X(Export, "hypereca_export")                   \
  X(ImportRows, "hypereca_import_rows")          \
  X(Unique, "hypereca_unique")                   \
  X(Bucketize, "hypereca_bucketize")

namespace hypereca {

namespace nb = nanobind;

template <typename Fn>
nb::capsule EncapsulateHandler(Fn* fn) {
  return nb::capsule(reinterpret_cast<void*>(fn));
}

// What this binary was compiled against: checked on import by jax_hypereca._native.
inline nb::dict BuildInfo(const char* platform) {
  nb::dict d;
  d["platform"] = platform;
  d["jaxlib_version"] = std::string(HYPERECA_JAXLIB_VERSION);
  d["ffi_api_major"] = XLA_FFI_API_MAJOR;
  d["ffi_api_minor"] = XLA_FFI_API_MINOR;
  return d;
}

// {name: value} of an enumeration of enums.h, in value order.
template <size_t N>
nb::dict EnumDict(const char* const (&names)[N]) {
  nb::dict d;
  for (size_t i = 0; i < N; ++i) d[names[i]] = static_cast<int>(i);
  return d;
}

// The table format's constants, read by the Python package at import.
inline nb::dict Constants() {
  nb::dict d;
  d["EMPTY_KEY"] = kEmptyKey;
  d["ERASED_KEY"] = kErasedKey;
  d["PADDING_KEY"] = kPaddingKey;
  d["NUM_COUNTERS"] = static_cast<int>(kNumCounters);
  d["NUM_HPARAMS"] = static_cast<int>(kNumHParams);
  d["NUM_INSERT_STATUS"] = static_cast<int>(kNumInsertStatus);
  d["NUM_APPLY_STATUS"] = static_cast<int>(kNumApplyStatus);
  nb::dict counters;
  counters["size"] = static_cast<int>(kSize);
  counters["inserted"] = static_cast<int>(kInserted);
  counters["evicted"] = static_cast<int>(kEvicted);
  counters["erased"] = static_cast<int>(kErased);
  counters["reserved_rejected"] = static_cast<int>(kReservedRejected);
  counters["insert_failed"] = static_cast<int>(kInsertFailed);
  counters["nonfinite_grads"] = static_cast<int>(kNonfiniteGrads);
  counters["lookups"] = static_cast<int>(kLookups);
  counters["hits"] = static_cast<int>(kHits);
  counters["moved_in"] = static_cast<int>(kMovedIn);
  counters["moved_out"] = static_cast<int>(kMovedOut);
  d["COUNTERS"] = counters;
  nb::dict insert_status;
  insert_status["queries"] = static_cast<int>(kStQueries);
  insert_status["hits"] = static_cast<int>(kStHits);
  insert_status["inserted"] = static_cast<int>(kStInserted);
  insert_status["evicted"] = static_cast<int>(kStEvicted);
  insert_status["reserved"] = static_cast<int>(kStReserved);
  insert_status["failed"] = static_cast<int>(kStFailed);
  d["INSERT_STATUS"] = insert_status;
  nb::dict apply_status;
  apply_status["unique_rows"] = static_cast<int>(kApUniqueRows);
  apply_status["nonfinite"] = static_cast<int>(kApNonfinite);
  apply_status["bad_slots"] = static_cast<int>(kApBadSlots);
  d["APPLY_STATUS"] = apply_status;
  nb::dict hparams;
  hparams["lr"] = static_cast<int>(kLr);
  hparams["b1"] = static_cast<int>(kBeta1);
  hparams["b2"] = static_cast<int>(kBeta2);
  hparams["eps"] = static_cast<int>(kEps);
  hparams["l1"] = static_cast<int>(kL1);
  hparams["l2"] = static_cast<int>(kL2);
  hparams["beta"] = static_cast<int>(kBeta);
  hparams["weight_decay"] = static_cast<int>(kWeightDecay);
  d["HPARAMS"] = hparams;
  // The int32 selector attributes of the ops (enums.h).
  d["POLICIES"] = EnumDict(kScorePolicyNames);
  d["INIT_KINDS"] = EnumDict(kInitKindNames);
  d["OPTIMIZERS"] = EnumDict(kOptimizerKindNames);
  d["EXPORT_MODES"] = EnumDict(kExportModeNames);
  return d;
}

}  // namespace hypereca

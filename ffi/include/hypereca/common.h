// XLA-free definitions shared by the CPU and CUDA custom calls and mirrored
// (read at import time, never retyped) by the Python package: reserved keys
// and the layouts of the counters, status and hyperparameter vectors. The
// enumerations of the int32 attributes are in enums.h.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define HYPERECA_HD __host__ __device__ __forceinline__
#else
#define HYPERECA_HD inline
#endif

namespace hypereca {

// ---------------------------------------------------------------------------
// Reserved key values. A slot whose key is kEmptyKey has never been used since
// the table was created or grown; kErasedKey marks a slot freed by erase or
// eviction-without-replacement (a tombstone: probing continues past it).
// kEmptyKey doubles as the padding id of padded inputs: queries equal to it are
// skipped silently. A query equal to kErasedKey is a user error: it is counted
// and reported, never stored.
// ---------------------------------------------------------------------------
constexpr int64_t kEmptyKey = -1;
constexpr int64_t kErasedKey = -2;
constexpr int64_t kPaddingKey = kEmptyKey;

HYPERECA_HD bool IsReserved(int64_t key) {
  return key == kEmptyKey || key == kErasedKey;
}

// Layout of the hyperparameter operand of apply_gradients (float32 vector).
enum HParam : int32_t {
  kLr = 0,
  kBeta1 = 1,     // Adam
  kBeta2 = 2,     // Adam
  kEps = 3,       // Adagrad, row-wise Adagrad, Adam
  kL1 = 4,        // FTRL
  kL2 = 5,        // FTRL
  kBeta = 6,      // FTRL
  kWeightDecay = 7,  // SGD, Adagrad, row-wise Adagrad, Adam: decoupled decay
  kNumHParams = 8,
};

// Cumulative per-shard counters, stored in the table state (int64 vector).
// Accounting: inserted + moved_in = size + evicted + erased + moved_out.
enum Counter : int32_t {
  kSize = 0,              // resident rows
  kInserted = 1,          // rows ever inserted
  kEvicted = 2,           // rows evicted by policy from a full bucket
  kErased = 3,            // rows removed by erase / erase_if
  kReservedRejected = 4,  // queries equal to kErasedKey (never stored)
  kInsertFailed = 5,      // inserts refused: bucket full, nothing evictable
  kNonfiniteGrads = 6,    // gradient rows skipped because of NaN/Inf
  kLookups = 7,           // non-padding queries of find_or_insert
  kHits = 8,              // of those, keys already resident
  kMovedIn = 9,           // rows moved in from another fold or tier
  kMovedOut = 10,         // rows moved out to another fold or tier
  kNumCounters = 16,
};

// Per-call status vector of find_or_insert (int64).
enum InsertStatus : int32_t {
  kStQueries = 0,   // non-padding queries
  kStHits = 1,      // already resident
  kStInserted = 2,  // newly inserted
  kStEvicted = 3,   // rows evicted to make room (returned in evicted_*)
  kStReserved = 4,  // queries equal to kErasedKey (slot -1)
  kStFailed = 5,    // inserts refused (slot -1)
  kNumInsertStatus = 8,
};

// Per-call status vector of apply_gradients (int64).
enum ApplyStatus : int32_t {
  kApUniqueRows = 0,  // distinct valid slots updated or skipped
  kApNonfinite = 1,   // rows skipped because their summed gradient was NaN/Inf
  kApBadSlots = 2,    // slots outside [-1, capacity): ignored
  kNumApplyStatus = 4,
};

// Per-call status vector of import_rows (int64).
enum ImportStatus : int32_t {
  kImRows = 0,         // non-sentinel rows offered
  kImInserted = 1,     // new keys
  kImOverwritten = 2,  // keys already resident: row replaced
  kImRefused = 3,      // bucket full: refused (slot -1)
  kNumImportStatus = 4,
};

}  // namespace hypereca

// Removing a key from its bucket. XLA-free; host and device.
#pragma once

#include <cstdint>

#include "hypereca/common.h"
#include "hypereca/enums.h"
#include "hypereca/probe.h"

namespace hypereca {

// Score a predicate compares: the access step (LRU) or the access count (LFU).
HYPERECA_HD int64_t ScoreOf(ScorePolicy policy, int64_t last_step, int64_t freq) {
  return policy == ScorePolicy::kLfu ? freq : last_step;
}

HYPERECA_HD bool Selected(ExportMode mode, int64_t score, int64_t threshold) {
  switch (mode) {
    case ExportMode::kAll: return true;
    case ExportMode::kScoreBelow: return score < threshold;
    case ExportMode::kScoreAtLeast: return score >= threshold;
  }
  return false;
}

// Frees slot s: a tombstone, or kEmptyKey when the next slot in probe order is
// empty (no probe can pass s then), folding the tombstones just before it too,
// so erase-heavy workloads keep short probes. Only slots of s's bucket are
// touched, so buckets can be freed in parallel.
HYPERECA_HD void FreeSlot(int64_t* keys, int64_t* last_step, int64_t* freq,
                          const TableGeometry& g, int64_t s) {
  const uint32_t mask = g.bucket_size - 1;
  const int64_t base = s - (s & mask);
  last_step[s] = 0;
  freq[s] = 0;
  const int64_t next = base + ((s - base + 1) & mask);
  if (keys[next] != kEmptyKey) {
    keys[s] = kErasedKey;
    if (keys[next] != kErasedKey) return;
    // A bucket left with tombstones only (e.g. one emptied by erase_if) is
    // reset to empty, so later probes stop at its first slot.
    for (int64_t i = base; i < base + g.bucket_size; ++i) {
      if (!IsReserved(keys[i])) return;
    }
    for (int64_t i = base; i < base + g.bucket_size; ++i) keys[i] = kEmptyKey;
    return;
  }
  keys[s] = kEmptyKey;
  for (uint32_t i = 1; i < g.bucket_size; ++i) {
    const int64_t prev = base + ((s - base + g.bucket_size - i) & mask);
    if (keys[prev] != kErasedKey) break;
    keys[prev] = kEmptyKey;
  }
}

}  // namespace hypereca

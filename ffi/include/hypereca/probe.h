// Bucketed open addressing over the key array of one table shard.
//
// capacity = num_buckets * bucket_size (bucket_size a power of two). A key
// lives only in bucket BucketOf(hash); inside the bucket it is probed linearly
// from ProbeStart(hash), wrapping, over at most bucket_size slots; a probe stops
// at kEmptyKey and skips kErasedKey tombstones. When a bucket has no free slot,
// an insert evicts the lowest-score slot that is not pinned (last access step
// >= pin_from_step); ties go to the older access, then the lower slot index.
// A find_or_insert call first touches (and so pins) every key of the call
// that is already resident, then inserts its misses in query order per
// bucket, so no key of a call is ever evicted by that call and the result is
// a pure function of the inputs whatever the number of threads or the device.
#pragma once

#include <cstdint>

#include "hypereca/common.h"
#include "hypereca/enums.h"
#include "hypereca/hash.h"

namespace hypereca {

struct TableGeometry {
  int64_t capacity;
  uint32_t bucket_size;  // power of two
  uint64_t num_buckets;  // capacity / bucket_size

  HYPERECA_HD bool Valid() const {
    return bucket_size > 0 && (bucket_size & (bucket_size - 1)) == 0 &&
           capacity > 0 && capacity % bucket_size == 0 &&
           num_buckets == static_cast<uint64_t>(capacity / bucket_size) &&
           num_buckets < (uint64_t{1} << 32);
  }
  HYPERECA_HD uint64_t BucketOfKey(int64_t key) const {
    return BucketOf(BucketHash(key), num_buckets);
  }
};

// Slot of key, or -1 when absent.
HYPERECA_HD int64_t FindSlot(const int64_t* keys, const TableGeometry& g, int64_t key) {
  const uint64_t h = BucketHash(key);
  const int64_t base = static_cast<int64_t>(BucketOf(h, g.num_buckets)) * g.bucket_size;
  const uint32_t start = ProbeStart(h, g.bucket_size);
  const uint32_t mask = g.bucket_size - 1;
  for (uint32_t i = 0; i < g.bucket_size; ++i) {
    const int64_t s = base + ((start + i) & mask);
    const int64_t k = keys[s];
    if (k == key) return s;
    if (k == kEmptyKey) return -1;
  }
  return -1;
}

// Score comparison for eviction: true when slot a is a better victim than b.
HYPERECA_HD bool BetterVictim(ScorePolicy policy, int64_t a_step, int64_t a_freq,
                              int64_t a_slot, int64_t b_step, int64_t b_freq,
                              int64_t b_slot) {
  if (policy == ScorePolicy::kLfu && a_freq != b_freq) return a_freq < b_freq;
  if (a_step != b_step) return a_step < b_step;
  return a_slot < b_slot;
}

enum class ProbeOutcome : int32_t {
  kFound = 0,     // key resident at slot
  kFree = 1,      // key absent; slot is free (empty or tombstone)
  kVictim = 2,    // key absent, bucket full; slot holds the victim to evict
  kNoRoom = 3,    // key absent, bucket full, every slot pinned
};

struct ProbeResult {
  ProbeOutcome outcome;
  int64_t slot;
};

// One pass over the key's bucket deciding where an insert would go.
HYPERECA_HD ProbeResult ProbeForInsert(const int64_t* keys, const int64_t* last_step,
                                       const int64_t* freq, const TableGeometry& g,
                                       ScorePolicy policy, int64_t pin_from_step,
                                       int64_t key) {
  const uint64_t h = BucketHash(key);
  const int64_t base = static_cast<int64_t>(BucketOf(h, g.num_buckets)) * g.bucket_size;
  const uint32_t start = ProbeStart(h, g.bucket_size);
  const uint32_t mask = g.bucket_size - 1;
  int64_t free_slot = -1;
  for (uint32_t i = 0; i < g.bucket_size; ++i) {
    const int64_t s = base + ((start + i) & mask);
    const int64_t k = keys[s];
    if (k == key) return {ProbeOutcome::kFound, s};
    if (k == kErasedKey) {
      if (free_slot < 0) free_slot = s;
    } else if (k == kEmptyKey) {
      return {ProbeOutcome::kFree, free_slot >= 0 ? free_slot : s};
    }
  }
  if (free_slot >= 0) return {ProbeOutcome::kFree, free_slot};
  int64_t victim = -1;
  for (int64_t s = base; s < base + g.bucket_size; ++s) {
    if (last_step[s] >= pin_from_step) continue;
    if (victim < 0 || BetterVictim(policy, last_step[s], freq[s], s, last_step[victim],
                                   freq[victim], victim)) {
      victim = s;
    }
  }
  if (victim < 0) return {ProbeOutcome::kNoRoom, -1};
  return {ProbeOutcome::kVictim, victim};
}

}  // namespace hypereca

// The key index of one host-store partition (hypereca/host_store.h): open
// addressing with linear probing over a power-of-two array of (key, record)
// slots, kEmptyKey marking a free slot, and backward-shift deletion -- no
// tombstones, so a probe stops at the first free slot and removals keep the
// probe sequences as short as if the removed keys had never been inserted.
// The owner keeps the load <= 1/2 (HostIndexSlots). XLA-free, host only.
#pragma once

#include <cstdint>
#include <vector>

#include "hypereca/common.h"
#include "hypereca/hash.h"

namespace hypereca {

constexpr uint64_t kHostSalt = 0x484f5354ull;  // "HOST": independent of the owner hash

// The host store's key hash: its top 32 bits pick the partition
// (FastRange32), its low bits the home slot in the partition's index.
inline uint64_t HostHash(int64_t key) {
  return Mix64(static_cast<uint64_t>(key) ^ (kHostSalt * kGolden));
}

// Slots for an index of up to `records` keys at load <= 1/2: the smallest
// power of two >= max(16, 2 * records); 0 for no records.
inline int64_t HostIndexSlots(int64_t records) {
  if (records <= 0) return 0;
  int64_t s = 16;
  while (s < 2 * records) s <<= 1;
  return s;
}

struct HostSlot {
  int64_t key;  // kEmptyKey: free
  int64_t pos;  // the key's record
};

class HostIndex {
 public:
  HostIndex() = default;
  // `slots`: a power of two, or 0 (an index that holds nothing).
  explicit HostIndex(int64_t slots)
      : slots_(static_cast<size_t>(slots), HostSlot{kEmptyKey, 0}),
        mask_(slots > 0 ? static_cast<uint64_t>(slots - 1) : 0) {}

  int64_t slots() const { return static_cast<int64_t>(slots_.size()); }

  // The key's home slot (to prefetch), or null for an empty index.
  const HostSlot* Home(uint64_t h) const {
    return slots_.empty() ? nullptr : &slots_[h & mask_];
  }

  // The key's record, or -1 when absent. h = HostHash(key).
  int64_t Find(int64_t key, uint64_t h) const {
    if (slots_.empty()) return -1;
    for (uint64_t i = h & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return slots_[i].pos;
      if (slots_[i].key == kEmptyKey) return -1;
    }
  }

  // Adds an absent key; the index must have a free slot.
  void Insert(int64_t key, uint64_t h, int64_t pos) {
    uint64_t i = h & mask_;
    while (slots_[i].key != kEmptyKey) i = (i + 1) & mask_;
    slots_[i] = {key, pos};
  }

  // Removes the key; returns its record, or -1 when absent. Each entry after
  // the hole whose home is not in (hole, entry] moves back into the hole.
  int64_t Remove(int64_t key, uint64_t h) {
    if (slots_.empty()) return -1;
    uint64_t i = h & mask_;
    for (;; i = (i + 1) & mask_) {
      if (slots_[i].key == key) break;
      if (slots_[i].key == kEmptyKey) return -1;
    }
    const int64_t pos = slots_[i].pos;
    for (uint64_t j = (i + 1) & mask_; slots_[j].key != kEmptyKey; j = (j + 1) & mask_) {
      const uint64_t home = HostHash(slots_[j].key) & mask_;
      if (((j - home) & mask_) >= ((j - i) & mask_)) {
        slots_[i] = slots_[j];
        i = j;
      }
    }
    slots_[i].key = kEmptyKey;
    return pos;
  }

 private:
  std::vector<HostSlot> slots_;
  uint64_t mask_ = 0;
};

}  // namespace hypereca

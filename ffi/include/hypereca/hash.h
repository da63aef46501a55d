// Hashing of int64 keys: the one owner hash, the bucket hash and the probe
// start. XLA-free; host and device.
#pragma once

#include <cstdint>

#include "hypereca/common.h"

namespace hypereca {

// splitmix64's finalizer: a bijection on uint64 with full avalanche.
HYPERECA_HD uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 31;
  return x;
}

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
// Salts keep the owner, bucket and init hashes independent of each other, so
// the keys owned by one shard still spread over all of its buckets.
constexpr uint64_t kBucketSalt = 0x42554b54ull;  // "BUKT"
constexpr uint64_t kOwnerSalt = 0x4f574e52ull;   // "OWNR"
constexpr uint64_t kInitSalt = 0x494e4954ull;    // "INIT"

// Maps a uniform 32-bit value onto [0, n) without a division (n < 2^32).
HYPERECA_HD uint64_t FastRange32(uint32_t x, uint64_t n) {
  return (static_cast<uint64_t>(x) * n) >> 32;
}

HYPERECA_HD uint64_t BucketHash(int64_t key) {
  return Mix64(static_cast<uint64_t>(key) ^ (kBucketSalt * kGolden));
}

// Bucket of a key in a table of num_buckets buckets.
HYPERECA_HD uint64_t BucketOf(uint64_t bucket_hash, uint64_t num_buckets) {
  return FastRange32(static_cast<uint32_t>(bucket_hash >> 32), num_buckets);
}

// First slot probed inside the bucket (bucket_size is a power of two).
HYPERECA_HD uint32_t ProbeStart(uint64_t bucket_hash, uint32_t bucket_size) {
  return static_cast<uint32_t>(bucket_hash) & (bucket_size - 1);
}

// The owner shard of a key: used by bucketize, by the Python routing code (its
// numpy twin) and by checkpoint re-sharding. Never change it without a format
// version bump.
HYPERECA_HD uint32_t OwnerOf(int64_t key, uint32_t num_shards) {
  const uint64_t h = Mix64(static_cast<uint64_t>(key) ^ (kOwnerSalt * kGolden));
  return static_cast<uint32_t>(
      FastRange32(static_cast<uint32_t>(h >> 32), num_shards));
}

}  // namespace hypereca

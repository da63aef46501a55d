// The stable radix sort of (key, query index) pairs that groups the work of
// most CUDA ops (by slot, bucket, owner or key) while keeping query order
// inside each group (nvcc only; includes cub).
#pragma once

#include <cub/device/device_radix_sort.cuh>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_util.cuh"

namespace hypereca::cuda {

// Buffers of one sort carved from a launcher's scratch. The op's prep kernel
// writes the keys (unless they are an input array) and idx_in = 0..n-1.
template <typename K>
struct IndexSort {
  int64_t n = 0;
  int bits = 0;             // low key bits that take part
  bool own_keys = true;     // key_in lives in scratch (else the caller's array)
  size_t key_in = 0;        // K (n,)
  size_t key_out = 0;       // K (n,)
  size_t idx_in = 0;        // int32 (n,)
  size_t idx_out = 0;       // int32 (n,)
  size_t temp = 0;
  size_t temp_bytes = 0;

  // Places the buffers after *cursor for n pairs whose keys hold every value
  // in [0, max_key] (max_key = 0: all bits, for signed keys).
  LaunchStatus Plan(size_t* cursor, int64_t count, uint64_t max_key, bool keys_in_scratch) {
    n = count;
    own_keys = keys_in_scratch;
    bits = max_key == 0 ? static_cast<int>(sizeof(K) * 8) : SortBits(max_key);
    const size_t items = static_cast<size_t>(n);
    if (own_keys) key_in = Take(cursor, items * sizeof(K));
    key_out = Take(cursor, items * sizeof(K));
    idx_in = Take(cursor, items * 4);
    idx_out = Take(cursor, items * 4);
    size_t bytes = 0;
    HYPERECA_CUDA_TRY(cub::DeviceRadixSort::SortPairs(
                          nullptr, bytes, static_cast<const K*>(nullptr),
                          static_cast<K*>(nullptr), static_cast<const int32_t*>(nullptr),
                          static_cast<int32_t*>(nullptr), static_cast<int>(n), 0, bits),
                      "sizing the sort");
    temp_bytes = bytes < 1 ? 1 : bytes;
    temp = Take(cursor, temp_bytes);
    return {};
  }

  K* KeysIn(char* base) const { return reinterpret_cast<K*>(base + key_in); }
  K* KeysOut(char* base) const { return reinterpret_cast<K*>(base + key_out); }
  int32_t* IdxIn(char* base) const { return reinterpret_cast<int32_t*>(base + idx_in); }
  int32_t* IdxOut(char* base) const { return reinterpret_cast<int32_t*>(base + idx_out); }

  // Sorts keys (KeysIn, or `keys` when they are not in scratch) with IdxIn.
  LaunchStatus Run(char* base, const K* keys, cudaStream_t stream, const char* what) const {
    size_t bytes = temp_bytes;
    HYPERECA_CUDA_TRY(cub::DeviceRadixSort::SortPairs(
                          base + temp, bytes, own_keys ? KeysIn(base) : keys, KeysOut(base),
                          IdxIn(base), IdxOut(base), static_cast<int>(n), 0, bits, stream),
                      what);
    return {};
  }
};

// The scratch of a launcher whose layout type L has a `total` and is computed
// by layout_of(args, &l): the size query, and the checked layout of a launch.
template <typename L, typename Args>
LaunchStatus ScratchTotal(LaunchStatus (*layout_of)(const Args&, L*), const Args& a,
                          size_t* bytes) {
  L l;
  const LaunchStatus s = layout_of(a, &l);
  *bytes = l.total;
  return s;
}

template <typename L, typename Args>
LaunchStatus CheckedLayout(LaunchStatus (*layout_of)(const Args&, L*), const Args& a,
                           const void* scratch, size_t scratch_bytes, L* l) {
  const LaunchStatus s = layout_of(a, l);
  if (!s.ok()) return s;
  return CheckScratch(scratch, scratch_bytes, l->total);
}

}  // namespace hypereca::cuda

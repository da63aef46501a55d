// find on CUDA: rows of resident keys without inserting anything, the same as
// ffi/src/find_cpu.cc (FindSlot of ffi/include/hypereca/probe.h).
//
// A group of kGroup lanes serves one query: it reads kGroup consecutive slots
// of the probe window at a time (one coalesced load), a warp ballot tells the
// group where the key or an empty slot is first, and the group then copies the
// row (or writes zeros / the would-be initial row) with vector loads. rows
// (0, D) asks for slots and found only.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_kernels.h"
#include "cuda_util.cuh"
#include "hypereca/hash.h"
#include "hypereca/probe.h"

namespace hypereca::cuda {
namespace {

constexpr int kGroup = 8;  // lanes per query (divides 32)
constexpr int kFindThreads = 256;
static_assert(kWarp % kGroup == 0, "a group must not straddle warps");

struct FindParams {
  const int64_t* keys;
  const void* values;
  uint32_t bucket_size;
  uint64_t num_buckets;
  int64_t units_per_row;
  const int64_t* query;
  int64_t n;
  uint64_t seed;
  InitKind init_kind;
  float init_scale;
  bool miss_init;
  bool want_rows;
  void* rows;
  int32_t* slots;
  bool* found;
};

// Every thread of every launched warp reaches the ballots (blockDim is a
// multiple of 32 and nothing returns before the probe loop ends).
template <typename T, typename V>
__global__ void FindKernel(FindParams p) {
  const unsigned lane = threadIdx.x % kWarp;
  const unsigned group = lane / kGroup;
  const unsigned gl = lane % kGroup;
  const int64_t q = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kGroup;
  const bool in_range = q < p.n;
  const int64_t key = in_range ? p.query[q] : kEmptyKey;
  bool active = in_range && !IsReserved(key);

  const uint32_t bucket_size = p.bucket_size;
  const uint32_t mask = bucket_size - 1;
  int64_t base = 0;
  uint32_t start = 0;
  if (active) {
    const uint64_t h = BucketHash(key);
    base = static_cast<int64_t>(BucketOf(h, p.num_buckets)) * bucket_size;
    start = ProbeStart(h, bucket_size);
  }
  int64_t slot = -1;
  // Probe positions i0 .. i0+kGroup-1 of every group's own window per round.
  for (uint32_t i0 = 0; __any_sync(kFullMask, active); i0 += kGroup) {
    const uint32_t pos = i0 + gl;
    const bool valid = active && pos < bucket_size;
    int64_t k = 0;
    if (valid) k = p.keys[base + ((start + pos) & mask)];
    const unsigned group_bits = (1u << kGroup) - 1u;
    const unsigned m =
        (__ballot_sync(kFullMask, valid && k == key) >> (group * kGroup)) & group_bits;
    const unsigned e =
        (__ballot_sync(kFullMask, valid && k == kEmptyKey) >> (group * kGroup)) & group_bits;
    if (active) {
      const unsigned stop = m | e;
      if (stop != 0u) {
        const int b = __ffs(static_cast<int>(stop)) - 1;
        if ((m >> b) & 1u) slot = base + ((start + i0 + static_cast<uint32_t>(b)) & mask);
        active = false;
      } else if (i0 + kGroup >= bucket_size) {
        active = false;  // the whole bucket was probed
      }
    }
  }
  if (!in_range) return;
  if (gl == 0) {
    p.slots[q] = static_cast<int32_t>(slot);
    p.found[q] = slot >= 0;
  }
  if (!p.want_rows) return;
  const int64_t units = p.units_per_row;
  V* dst = static_cast<V*>(p.rows) + q * units;
  if (slot >= 0) {
    const V* src = static_cast<const V*>(p.values) + slot * units;
    for (int64_t u = gl; u < units; u += kGroup) dst[u] = src[u];
  } else if (p.miss_init && !IsReserved(key)) {
    const uint64_t row_seed = RowSeed(p.seed, key);
    for (int64_t u = gl; u < units; u += kGroup) {
      dst[u] = InitUnit<T, V>(row_seed, u, p.init_kind, p.init_scale);
    }
  } else {
    for (int64_t u = gl; u < units; u += kGroup) dst[u] = ZeroUnit<V>();
  }
}

}  // namespace

LaunchStatus Find(const FindArgs& a, cudaStream_t stream) {
  if (a.n == 0) return {};
  const int64_t row_bytes = a.dim * static_cast<int64_t>(ValueBytes(a.value_type));
  // Without rows any unit will do (nothing is copied).
  const int unit = a.want_rows ? CopyUnitBytes(row_bytes,
                                               static_cast<int>(ValueBytes(a.value_type)),
                                               a.values, a.rows)
                               : static_cast<int>(ValueBytes(a.value_type));
  return DispatchValueAndUnit(a.value_type, unit, [&](auto value_tag, auto unit_tag)
                                                      -> LaunchStatus {
    using T = decltype(value_tag);
    using V = decltype(unit_tag);
    FindParams p;
    p.keys = a.keys;
    p.values = a.values;
    p.bucket_size = a.bucket_size;
    p.num_buckets = a.num_buckets;
    p.units_per_row = row_bytes / static_cast<int64_t>(sizeof(V));
    p.query = a.query;
    p.n = a.n;
    p.seed = a.seed;
    p.init_kind = static_cast<InitKind>(a.init_kind);
    p.init_scale = a.init_scale;
    p.miss_init = a.miss_init;
    p.want_rows = a.want_rows;
    p.rows = a.rows;
    p.slots = a.slots;
    p.found = a.found;
    const int64_t blocks = CeilDiv(a.n * kGroup, kFindThreads);
    FindKernel<T, V><<<static_cast<unsigned>(blocks), kFindThreads, 0, stream>>>(p);
    HYPERECA_CUDA_LAUNCHED("launching the find kernel");
    return {};
  });
}

}  // namespace hypereca::cuda

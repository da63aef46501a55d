// Device-side helpers shared by the *_kernels.cu files (nvcc only).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "cuda_kernels.h"
#include "hypereca/common.h"
#include "hypereca/dtype.h"
#include "hypereca/hash.h"
#include "hypereca/init.h"

namespace hypereca::cuda {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarp = 32;

// Returns from the enclosing launcher when a CUDA call (or the launch just
// made) failed.
#define HYPERECA_CUDA_TRY(expr, step)                    \
  do {                                                   \
    const cudaError_t hypereca_err_ = (expr);            \
    if (hypereca_err_ != cudaSuccess) {                  \
      return LaunchStatus{hypereca_err_, (step)};        \
    }                                                    \
  } while (0)

#define HYPERECA_CUDA_LAUNCHED(step) HYPERECA_CUDA_TRY(cudaGetLastError(), (step))

__host__ __device__ inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride loop over `work` items: enough to fill the device,
// never more than the grid's x limit.
inline unsigned GridFor(int64_t work, int threads) {
  const int64_t blocks = CeilDiv(work, threads);
  constexpr int64_t kMaxBlocks = int64_t{1} << 20;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

// Widest copy unit (16, 8, 4 or 2 bytes, at least `min_bytes`) that divides
// `row_bytes` and the address of every pointer given; 0 when none does.
inline int CopyUnitBytes(int64_t row_bytes, int min_bytes, const void* a, const void* b,
                         const void* c = nullptr) {
  for (int unit = 16; unit >= min_bytes; unit /= 2) {
    if (row_bytes % unit) continue;
    if (reinterpret_cast<uintptr_t>(a) % unit || reinterpret_cast<uintptr_t>(b) % unit ||
        reinterpret_cast<uintptr_t>(c) % unit) {
      continue;
    }
    return unit;
  }
  return 0;
}

// Calls fn(T{}, V{}) with T the storage type and V the copy unit.
template <typename Fn>
LaunchStatus DispatchValueAndUnit(ValueType vt, int unit, Fn&& fn) {
  if (vt == ValueType::kF32) {
    switch (unit) {
      case 16: return fn(float{}, uint4{});
      case 8: return fn(float{}, uint2{});
      case 4: return fn(float{}, uint32_t{});
      default: break;
    }
  } else {
    switch (unit) {
      case 16: return fn(Bf16{}, uint4{});
      case 8: return fn(Bf16{}, uint2{});
      case 4: return fn(Bf16{}, uint32_t{});
      case 2: return fn(Bf16{}, uint16_t{});
      default: break;
    }
  }
  return LaunchStatus{cudaErrorMisalignedAddress, "choosing the row copy width"};
}

template <typename V>
__device__ __forceinline__ V ZeroUnit() {
  V v;
  memset(&v, 0, sizeof(V));
  return v;
}

// The copy unit `u` of the initial row of a key: columns u*E .. u*E+E-1.
template <typename T, typename V>
__device__ __forceinline__ V InitUnit(uint64_t row_seed, int64_t u, InitKind kind,
                                      float scale) {
  constexpr int kElems = static_cast<int>(sizeof(V) / sizeof(T));
  static_assert(kElems >= 1 && sizeof(V) % sizeof(T) == 0, "bad copy unit");
  T tmp[kElems];
#pragma unroll
  for (int e = 0; e < kElems; ++e) {
    tmp[e] = FromF32<T>(
        InitValue(row_seed, static_cast<uint32_t>(u * kElems + e), kind, scale));
  }
  V v;
  memcpy(&v, tmp, sizeof(V));
  return v;
}

// ---------------------------------------------------------------- scratch
// Launchers carve their device scratch into 256-byte aligned pieces: a size
// query walks the same Take calls as the launch itself.
constexpr size_t kScratchAlign = 256;

inline size_t Take(size_t* cursor, size_t bytes) {
  const size_t at = *cursor;
  *cursor += (bytes + kScratchAlign - 1) / kScratchAlign * kScratchAlign;
  return at;
}

// The scratch a launcher was handed holds at least the bytes its layout needs.
inline LaunchStatus CheckScratch(const void* scratch, size_t have, size_t need) {
  if (have < need || (need > 0 && scratch == nullptr)) {
    return LaunchStatus{cudaErrorInvalidValue, "checking the scratch size"};
  }
  return {};
}

// Bits of a radix sort key that hold every value in [0, max_value].
inline int SortBits(uint64_t max_value) {
  int bits = 1;
  while (bits < 64 && (max_value >> bits) != 0) ++bits;
  return bits;
}

struct MaxOp {
  __host__ __device__ __forceinline__ int32_t operator()(int32_t a, int32_t b) const {
    return a > b ? a : b;
  }
};

// Adds v to *global with one global atomic per block (same-address atomics
// from every warp would serialize in L2). Every thread of the block must call
// it (it synchronizes the block); `shared` is a block-shared counter.
__device__ __forceinline__ void BlockAdd(unsigned long long* shared, unsigned long long v,
                                         unsigned long long* global) {
  if (threadIdx.x == 0) *shared = 0;
  __syncthreads();
  if (v) atomicAdd(shared, v);
  __syncthreads();
  if (threadIdx.x == 0 && *shared) atomicAdd(global, *shared);
}

// The probe of an insert (probe.h's ProbeForInsert up to the victim choice)
// by a whole warp: the 32 lanes read 32 consecutive slots of the probe window
// per round and ballot for the key / an empty slot / a tombstone. hit is the
// key's slot or -1; free_slot is where an insert goes without evicting (the
// first tombstone before the probe stops, else the empty slot that stops it,
// else the first tombstone of a bucket without an empty slot), -1 when the
// bucket is full. Warp-uniform results; every lane must call it.
struct WarpProbeResult {
  int64_t hit;
  int64_t free_slot;
};

__device__ __forceinline__ WarpProbeResult WarpProbe(const int64_t* keys, uint32_t bucket_size,
                                                     uint64_t num_buckets, int64_t key,
                                                     unsigned lane) {
  const uint32_t mask = bucket_size - 1;
  const uint64_t h = BucketHash(key);
  const int64_t base = static_cast<int64_t>(BucketOf(h, num_buckets)) * bucket_size;
  const uint32_t start = ProbeStart(h, bucket_size);
  WarpProbeResult r{-1, -1};
  int64_t first_tomb = -1;  // probe position
  for (uint32_t i0 = 0; i0 < bucket_size; i0 += kWarp) {
    const uint32_t pos = i0 + lane;
    const bool valid = pos < bucket_size;
    int64_t k = 0;
    if (valid) k = keys[base + ((start + pos) & mask)];
    const unsigned m = __ballot_sync(kFullMask, valid && k == key);
    const unsigned e = __ballot_sync(kFullMask, valid && k == kEmptyKey);
    const unsigned tb = __ballot_sync(kFullMask, valid && k == kErasedKey);
    const unsigned stop = m | e;
    if (stop != 0u) {
      const int b = __ffs(static_cast<int>(stop)) - 1;
      if (first_tomb < 0) {
        const unsigned before = tb & ((1u << b) - 1u);  // tombstones ahead of the stop
        if (before != 0u) first_tomb = i0 + (__ffs(static_cast<int>(before)) - 1);
      }
      if ((m >> b) & 1u) {
        r.hit = base + ((start + i0 + static_cast<uint32_t>(b)) & mask);
      } else {
        const int64_t fp = first_tomb >= 0 ? first_tomb : static_cast<int64_t>(i0) + b;
        r.free_slot = base + ((static_cast<int64_t>(start) + fp) & mask);
      }
      return r;
    }
    if (first_tomb < 0 && tb != 0u) first_tomb = i0 + (__ffs(static_cast<int>(tb)) - 1);
  }
  if (first_tomb >= 0) r.free_slot = base + ((static_cast<int64_t>(start) + first_tomb) & mask);
  return r;
}

// Sorted position i heads a segment of equal keys when it differs from i-1:
// head_pos[i] = i there, 0 elsewhere (an inclusive max-scan of it gives every
// position the head of its segment).
template <typename K>
__global__ void SegmentHeadsKernel(const K* __restrict__ sorted_key, int64_t n,
                                   int32_t* __restrict__ head_pos) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const bool head = i == 0 || sorted_key[i] != sorted_key[i - 1];
  head_pos[i] = head ? static_cast<int32_t>(i) : 0;
}

}  // namespace hypereca::cuda

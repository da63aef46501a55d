// bucketize on CUDA: the same routing as ffi/src/bucketize_cpu.cc — keys to
// their owner's fixed-capacity send row in query order, true counts (even past
// the capacity), each key's position or -1 (padding or overflow).
//   1. prep    owner of each key (the sentinel W for padding), send = kEmptyKey.
//   2. sort    stable radix sort of (owner, index): each owner's keys in
//              query order.
//   3. starts  thread d finds where owner d's run starts (binary search):
//              counts[d] is the run's length.
//   4. place   sorted position r of owner d is the key's rank j = r - start[d].
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_kernels.h"
#include "cuda_sort.cuh"
#include "cuda_util.cuh"
#include "hypereca/common.h"
#include "hypereca/hash.h"

namespace hypereca::cuda {
namespace {

constexpr int kThreads = 256;

struct Layout {
  IndexSort<uint32_t> sort;  // (owner or W, query index)
  size_t start = 0;          // int32 (W,)
  size_t total = 0;
};

LaunchStatus LayoutOf(const BucketizeArgs& a, Layout* l) {
  *l = Layout{};
  if (a.n == 0) return {};
  size_t cursor = 0;
  const LaunchStatus s = l->sort.Plan(&cursor, a.n, static_cast<uint64_t>(a.shards), true);
  if (!s.ok()) return s;
  l->start = Take(&cursor, static_cast<size_t>(a.shards) * 4);
  l->total = cursor;
  return {};
}

__global__ void PrepKernel(const int64_t* __restrict__ keys, int64_t n, uint32_t shards,
                           uint32_t* __restrict__ owner, int32_t* __restrict__ q_in,
                           int32_t* __restrict__ position) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int64_t key = keys[i];
  owner[i] = key == kPaddingKey ? shards : OwnerOf(key, shards);
  q_in[i] = static_cast<int32_t>(i);
  position[i] = -1;
}

// First sorted position whose owner is >= d.
__device__ __forceinline__ int64_t LowerBound(const uint32_t* owner, int64_t n, uint32_t d) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (owner[mid] < d) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

__global__ void StartsKernel(const uint32_t* __restrict__ owner, int64_t n, uint32_t shards,
                             int32_t* __restrict__ start, int32_t* __restrict__ counts) {
  const int64_t d = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (d >= shards) return;
  const int64_t s = LowerBound(owner, n, static_cast<uint32_t>(d));
  const int64_t e = LowerBound(owner, n, static_cast<uint32_t>(d + 1));
  start[d] = static_cast<int32_t>(s);
  counts[d] = static_cast<int32_t>(e - s);
}

__global__ void PlaceKernel(const uint32_t* __restrict__ owner, const int32_t* __restrict__ q_of,
                            const int32_t* __restrict__ start, int64_t n, uint32_t shards,
                            int64_t cap, const int64_t* __restrict__ keys,
                            int64_t* __restrict__ send, int32_t* __restrict__ position) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= n) return;
  const uint32_t d = owner[r];
  if (d == shards) return;  // padding
  const int64_t j = r - start[d];
  if (j >= cap) return;  // overflow: position stays -1
  const int32_t q = q_of[r];
  const int64_t at = static_cast<int64_t>(d) * cap + j;
  send[at] = keys[q];
  position[q] = static_cast<int32_t>(at);
}

}  // namespace

LaunchStatus BucketizeScratchBytes(const BucketizeArgs& a, size_t* bytes) {
  return ScratchTotal(LayoutOf, a, bytes);
}

LaunchStatus Bucketize(const BucketizeArgs& a, void* scratch, size_t scratch_bytes,
                       cudaStream_t stream) {
  // kEmptyKey is all ones: a byte fill.
  static_assert(kEmptyKey == -1, "send buffers are filled bytewise");
  HYPERECA_CUDA_TRY(
      cudaMemsetAsync(a.send, 0xff, static_cast<size_t>(a.shards * a.cap) * 8, stream),
      "filling the send buffers");
  if (a.n == 0) {
    HYPERECA_CUDA_TRY(cudaMemsetAsync(a.counts, 0, static_cast<size_t>(a.shards) * 4, stream),
                      "clearing the counts");
    return {};
  }
  Layout l;
  const LaunchStatus st = CheckedLayout(LayoutOf, a, scratch, scratch_bytes, &l);
  if (!st.ok()) return st;
  char* base = static_cast<char*>(scratch);
  auto* start = reinterpret_cast<int32_t*>(base + l.start);
  const auto shards = static_cast<uint32_t>(a.shards);
  const unsigned blocks = static_cast<unsigned>(CeilDiv(a.n, kThreads));
  PrepKernel<<<blocks, kThreads, 0, stream>>>(a.keys, a.n, shards, l.sort.KeysIn(base),
                                              l.sort.IdxIn(base), a.position);
  HYPERECA_CUDA_LAUNCHED("launching the bucketize prep kernel");
  const LaunchStatus sorted = l.sort.Run(base, nullptr, stream, "sorting the keys by owner");
  if (!sorted.ok()) return sorted;
  StartsKernel<<<static_cast<unsigned>(CeilDiv(a.shards, kThreads)), kThreads, 0, stream>>>(
      l.sort.KeysOut(base), a.n, shards, start, a.counts);
  HYPERECA_CUDA_LAUNCHED("launching the bucketize starts kernel");
  PlaceKernel<<<blocks, kThreads, 0, stream>>>(l.sort.KeysOut(base), l.sort.IdxOut(base), start,
                                               a.n, shards, a.cap, a.keys, a.send, a.position);
  HYPERECA_CUDA_LAUNCHED("launching the bucketize place kernel");
  return {};
}

}  // namespace hypereca::cuda

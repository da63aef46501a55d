// erase and erase_if on CUDA: the same results as ffi/src/erase_cpu.cc (slot
// freeing of ffi/include/hypereca/erase.h, tombstones folded alike).
//
// erase: the CPU frees the queried keys in query order; only keys of one
// bucket interact, so the queries are sorted by (bucket, query index) and one
// thread applies each bucket's run in query order.
// erase_if: one thread per bucket, slots in order, as each CPU task does.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_kernels.h"
#include "cuda_sort.cuh"
#include "cuda_util.cuh"
#include "hypereca/common.h"
#include "hypereca/erase.h"
#include "hypereca/probe.h"

namespace hypereca::cuda {
namespace {

constexpr int kThreads = 256;

TableGeometry GeometryOf(const TableMeta& t) {
  TableGeometry g;
  g.capacity = t.capacity;
  g.bucket_size = t.bucket_size;
  g.num_buckets = t.num_buckets;
  return g;
}

struct Layout {
  size_t count = 0;           // unsigned long long
  IndexSort<uint32_t> sort;  // (bucket or num_buckets, query index)
  size_t total = 0;
};

LaunchStatus LayoutOf(const EraseArgs& a, Layout* l) {
  *l = Layout{};
  size_t cursor = 0;
  l->count = Take(&cursor, 8);
  if (a.n > 0) {
    const LaunchStatus s = l->sort.Plan(&cursor, a.n, a.table.num_buckets, true);
    if (!s.ok()) return s;
  }
  l->total = cursor;
  return {};
}

// Bucket of each query (num_buckets for reserved ids: never stored).
__global__ void PrepKernel(const int64_t* __restrict__ query, int64_t n, uint64_t num_buckets,
                           bool* __restrict__ erased, uint32_t* __restrict__ bucket,
                           int32_t* __restrict__ q_in) {
  const int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (q >= n) return;
  const int64_t key = query[q];
  erased[q] = false;
  bucket[q] = IsReserved(key) ? static_cast<uint32_t>(num_buckets)
                              : static_cast<uint32_t>(BucketOf(BucketHash(key), num_buckets));
  q_in[q] = static_cast<int32_t>(q);
}

// The thread at the start of a bucket's run erases its keys in query order.
__global__ void EraseRunsKernel(const uint32_t* __restrict__ bucket,
                                const int32_t* __restrict__ q_of, int64_t n,
                                const int64_t* __restrict__ query, TableGeometry g,
                                int64_t* keys, int64_t* last, int64_t* freq,
                                bool* __restrict__ erased, unsigned long long* count) {
  __shared__ unsigned long long block_count;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  unsigned long long mine = 0;
  if (r < n) {
    const uint32_t b = bucket[r];
    if (static_cast<uint64_t>(b) != g.num_buckets && (r == 0 || bucket[r - 1] != b)) {
      for (int64_t i = r; i < n && bucket[i] == b; ++i) {
        const int32_t q = q_of[i];
        const int64_t s = FindSlot(keys, g, query[q]);
        if (s < 0) continue;
        FreeSlot(keys, last, freq, g, s);
        erased[q] = true;
        ++mine;
      }
    }
  }
  BlockAdd(&block_count, mine, count);
}

// erase_if: thread b frees the selected rows of bucket b, slots in order.
__global__ void EraseIfKernel(TableGeometry g, int64_t* keys, int64_t* last, int64_t* freq,
                              const int64_t* __restrict__ threshold, ExportMode mode,
                              ScorePolicy policy, unsigned long long* count) {
  __shared__ unsigned long long block_count;
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  unsigned long long mine = 0;
  if (static_cast<uint64_t>(b) < g.num_buckets) {
    const int64_t thr = *threshold;
    const int64_t base = b * g.bucket_size;
    for (int64_t s = base; s < base + g.bucket_size; ++s) {
      if (IsReserved(keys[s]) || !Selected(mode, ScoreOf(policy, last[s], freq[s]), thr)) {
        continue;
      }
      FreeSlot(keys, last, freq, g, s);
      ++mine;
    }
  }
  BlockAdd(&block_count, mine, count);
}

__global__ void CountersKernel(const unsigned long long* __restrict__ count,
                               int64_t* __restrict__ counters) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  const auto c = static_cast<int64_t>(*count);
  counters[kSize] -= c;
  counters[kErased] += c;
}

}  // namespace

LaunchStatus EraseScratchBytes(const EraseArgs& a, size_t* bytes) {
  return ScratchTotal(LayoutOf, a, bytes);
}

LaunchStatus Erase(const EraseArgs& a, void* scratch, size_t scratch_bytes,
                   cudaStream_t stream) {
  Layout l;
  const LaunchStatus st = CheckedLayout(LayoutOf, a, scratch, scratch_bytes, &l);
  if (!st.ok()) return st;
  char* base = static_cast<char*>(scratch);
  auto* count = reinterpret_cast<unsigned long long*>(base + l.count);
  HYPERECA_CUDA_TRY(cudaMemsetAsync(count, 0, 8, stream), "clearing the erase count");
  if (a.n > 0) {
    const unsigned blocks = static_cast<unsigned>(CeilDiv(a.n, kThreads));
    PrepKernel<<<blocks, kThreads, 0, stream>>>(a.query, a.n, a.table.num_buckets, a.erased,
                                                l.sort.KeysIn(base), l.sort.IdxIn(base));
    HYPERECA_CUDA_LAUNCHED("launching the erase prep kernel");
    const LaunchStatus sorted = l.sort.Run(base, nullptr, stream, "sorting the keys by bucket");
    if (!sorted.ok()) return sorted;
    EraseRunsKernel<<<blocks, kThreads, 0, stream>>>(
        l.sort.KeysOut(base), l.sort.IdxOut(base), a.n, a.query,
        GeometryOf(a.table), a.table.keys, a.table.last_step, a.table.freq,
        a.erased, count);
    HYPERECA_CUDA_LAUNCHED("launching the erase kernel");
  }
  CountersKernel<<<1, 1, 0, stream>>>(count, a.table.counters);
  HYPERECA_CUDA_LAUNCHED("launching the erase counters kernel");
  return {};
}

LaunchStatus EraseIf(const EraseIfArgs& a, cudaStream_t stream) {
  auto* count = reinterpret_cast<unsigned long long*>(a.erased);
  HYPERECA_CUDA_TRY(cudaMemsetAsync(count, 0, 8, stream), "clearing the erase_if count");
  const auto buckets = static_cast<int64_t>(a.table.num_buckets);
  EraseIfKernel<<<static_cast<unsigned>(CeilDiv(buckets, kThreads)), kThreads, 0, stream>>>(
      GeometryOf(a.table), a.table.keys, a.table.last_step, a.table.freq,
      a.threshold, static_cast<ExportMode>(a.mode), static_cast<ScorePolicy>(a.policy), count);
  HYPERECA_CUDA_LAUNCHED("launching the erase_if kernel");
  CountersKernel<<<1, 1, 0, stream>>>(count, a.table.counters);
  HYPERECA_CUDA_LAUNCHED("launching the erase_if counters kernel");
  return {};
}

}  // namespace hypereca::cuda

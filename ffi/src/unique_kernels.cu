// unique on CUDA: the same outputs as ffi/src/unique_cpu.cc — distinct keys in
// first-occurrence order, the inverse map, the count; padding ids are not keys
// (inverse -1).
//   1. sort     stable radix sort of (key, index): equal keys form segments
//               whose head is the key's first occurrence.
//   2. heads    segment heads and, by a max-scan, every position's head.
//   3. first    flag[i] = 1 at each key's first occurrence (query order).
//   4. rank     exclusive sum of the flags: the key's place in the output.
//   5. resolve  inverse of every query, unique[rank] = key at each head.
//   6. tail     count, and kEmptyKey past it.
#include <cub/device/device_scan.cuh>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_kernels.h"
#include "cuda_sort.cuh"
#include "cuda_util.cuh"
#include "hypereca/common.h"

namespace hypereca::cuda {
namespace {

constexpr int kThreads = 256;

struct Layout {
  IndexSort<int64_t> sort;  // (key, query index); the keys are the input
  size_t head_pos = 0;      // int32 (n,)
  size_t seg_head = 0;      // int32 (n,)
  size_t flag = 0;          // int32 (n,)
  size_t rank = 0;          // int32 (n,)
  size_t scan_temp = 0;
  size_t scan_temp_bytes = 0;
  size_t total = 0;
};

LaunchStatus LayoutOf(const UniqueArgs& a, Layout* l) {
  *l = Layout{};
  if (a.n == 0) return {};
  const size_t n = static_cast<size_t>(a.n);
  const int items = static_cast<int>(a.n);
  size_t cursor = 0;
  const LaunchStatus s = l->sort.Plan(&cursor, a.n, 0, false);
  if (!s.ok()) return s;
  l->head_pos = Take(&cursor, n * 4);
  l->seg_head = Take(&cursor, n * 4);
  l->flag = Take(&cursor, n * 4);
  l->rank = Take(&cursor, n * 4);
  size_t temp = 0, bytes = 0;
  HYPERECA_CUDA_TRY(cub::DeviceScan::InclusiveScan(nullptr, bytes,
                                                   static_cast<const int32_t*>(nullptr),
                                                   static_cast<int32_t*>(nullptr), MaxOp{},
                                                   items),
                    "sizing the segment scan");
  temp = bytes > temp ? bytes : temp;
  bytes = 0;
  HYPERECA_CUDA_TRY(cub::DeviceScan::ExclusiveSum(nullptr, bytes,
                                                  static_cast<const int32_t*>(nullptr),
                                                  static_cast<int32_t*>(nullptr), items),
                    "sizing the rank scan");
  temp = bytes > temp ? bytes : temp;
  l->scan_temp_bytes = temp < 1 ? 1 : temp;
  l->scan_temp = Take(&cursor, l->scan_temp_bytes);
  l->total = cursor;
  return {};
}

__global__ void PrepKernel(int64_t n, int32_t* __restrict__ q_in, int32_t* __restrict__ flag) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  q_in[i] = static_cast<int32_t>(i);
  flag[i] = 0;
}

__global__ void FirstKernel(const int64_t* __restrict__ sorted_key,
                            const int32_t* __restrict__ sorted_q,
                            const int32_t* __restrict__ seg_head, int64_t n,
                            int32_t* __restrict__ flag) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  if (seg_head[i] == i && sorted_key[i] != kPaddingKey) flag[sorted_q[i]] = 1;
}

__global__ void ResolveKernel(const int64_t* __restrict__ sorted_key,
                              const int32_t* __restrict__ sorted_q,
                              const int32_t* __restrict__ seg_head,
                              const int32_t* __restrict__ rank, int64_t n,
                              int64_t* __restrict__ uniq, int32_t* __restrict__ inverse) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int64_t key = sorted_key[i];
  const int32_t q = sorted_q[i];
  if (key == kPaddingKey) {
    inverse[q] = -1;
    return;
  }
  const int32_t h = seg_head[i];
  const int32_t r = rank[sorted_q[h]];
  inverse[q] = r;
  if (h == i) uniq[r] = key;
}

__global__ void TailKernel(const int32_t* __restrict__ rank, const int32_t* __restrict__ flag,
                           int64_t n, int64_t* __restrict__ uniq, int32_t* __restrict__ count) {
  const int32_t m = rank[n - 1] + flag[n - 1];
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (tid == 0) *count = m;
  for (int64_t i = m + tid; i < n; i += stride) uniq[i] = kEmptyKey;
}

}  // namespace

LaunchStatus UniqueScratchBytes(const UniqueArgs& a, size_t* bytes) {
  return ScratchTotal(LayoutOf, a, bytes);
}

LaunchStatus Unique(const UniqueArgs& a, void* scratch, size_t scratch_bytes,
                    cudaStream_t stream) {
  if (a.n == 0) {
    HYPERECA_CUDA_TRY(cudaMemsetAsync(a.count, 0, 4, stream), "clearing the unique count");
    return {};
  }
  Layout l;
  const LaunchStatus st = CheckedLayout(LayoutOf, a, scratch, scratch_bytes, &l);
  if (!st.ok()) return st;
  char* base = static_cast<char*>(scratch);
  auto* q_in = l.sort.IdxIn(base);
  auto* sorted_key = l.sort.KeysOut(base);
  auto* sorted_q = l.sort.IdxOut(base);
  auto* head_pos = reinterpret_cast<int32_t*>(base + l.head_pos);
  auto* seg_head = reinterpret_cast<int32_t*>(base + l.seg_head);
  auto* flag = reinterpret_cast<int32_t*>(base + l.flag);
  auto* rank = reinterpret_cast<int32_t*>(base + l.rank);
  void* temp = base + l.scan_temp;
  const int items = static_cast<int>(a.n);
  const unsigned blocks = static_cast<unsigned>(CeilDiv(a.n, kThreads));
  PrepKernel<<<blocks, kThreads, 0, stream>>>(a.n, q_in, flag);
  HYPERECA_CUDA_LAUNCHED("launching the unique prep kernel");
  const LaunchStatus sorted = l.sort.Run(base, a.keys, stream, "sorting the keys");
  if (!sorted.ok()) return sorted;
  SegmentHeadsKernel<int64_t><<<blocks, kThreads, 0, stream>>>(sorted_key, a.n, head_pos);
  HYPERECA_CUDA_LAUNCHED("launching the unique segment kernel");
  size_t temp_bytes = l.scan_temp_bytes;
  HYPERECA_CUDA_TRY(cub::DeviceScan::InclusiveScan(temp, temp_bytes, head_pos, seg_head,
                                                   MaxOp{}, items, stream),
                    "scanning the key segments");
  FirstKernel<<<blocks, kThreads, 0, stream>>>(sorted_key, sorted_q, seg_head, a.n, flag);
  HYPERECA_CUDA_LAUNCHED("launching the unique first-occurrence kernel");
  temp_bytes = l.scan_temp_bytes;
  HYPERECA_CUDA_TRY(cub::DeviceScan::ExclusiveSum(temp, temp_bytes, flag, rank, items, stream),
                    "ranking the first occurrences");
  ResolveKernel<<<blocks, kThreads, 0, stream>>>(sorted_key, sorted_q, seg_head, rank, a.n,
                                                 a.uniq, a.inverse);
  HYPERECA_CUDA_LAUNCHED("launching the unique resolve kernel");
  TailKernel<<<GridFor(a.n, kThreads), kThreads, 0, stream>>>(rank, flag, a.n, a.uniq, a.count);
  HYPERECA_CUDA_LAUNCHED("launching the unique tail kernel");
  return {};
}

}  // namespace hypereca::cuda

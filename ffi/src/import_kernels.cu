// import_rows on CUDA: the same upsert as ffi/src/import_cpu.cc — rows of one
// bucket are applied in input order, a key already resident is overwritten, a
// full bucket refuses the row (nothing is evicted, slot -1, counted).
//   1. prep   sort key per row: its bucket, or the sentinel num_buckets for
//             kEmptyKey / kErasedKey rows (skipped, slot -1); counts rows.
//   2. sort   stable radix sort of (bucket, row index): one run per bucket.
//   3. runs   one warp per run: per row a warp probe (cuda_util.cuh's
//             WarpProbe), lane 0 writes key and scores, the warp copies the
//             values and optimizer state; rows of a run one after the other.
//   4. finish status and the table's size counter.
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
constexpr int kWarpsPerBlock = kThreads / kWarp;

struct Layout {
  size_t counts = 0;          // unsigned long long (kNumImportStatus,)
  IndexSort<uint32_t> sort;  // (bucket or num_buckets, row index)
  size_t total = 0;
};

LaunchStatus LayoutOf(const ImportArgs& a, Layout* l) {
  *l = Layout{};
  size_t cursor = 0;
  l->counts = Take(&cursor, kNumImportStatus * 8);
  if (a.n > 0) {
    const LaunchStatus s = l->sort.Plan(&cursor, a.n, a.table.num_buckets, true);
    if (!s.ok()) return s;
  }
  l->total = cursor;
  return {};
}

__global__ void PrepKernel(const int64_t* __restrict__ in_keys, int64_t n, uint64_t num_buckets,
                           int32_t* __restrict__ slots, uint32_t* __restrict__ bucket,
                           int32_t* __restrict__ q_in, unsigned long long* __restrict__ counts) {
  __shared__ unsigned long long block_rows;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  bool row = false;
  if (i < n) {
    const int64_t key = in_keys[i];
    row = !IsReserved(key);
    slots[i] = -1;
    bucket[i] = row ? static_cast<uint32_t>(BucketOf(BucketHash(key), num_buckets))
                    : static_cast<uint32_t>(num_buckets);
    q_in[i] = static_cast<int32_t>(i);
  }
  BlockAdd(&block_rows, row ? 1ull : 0ull, counts + kImRows);
}

struct RunParams {
  int64_t* keys;
  const void* in_values;
  void* values;
  float* opt;
  int64_t* last;
  int64_t* freq;
  uint32_t bucket_size;
  uint64_t num_buckets;
  int64_t dim;
  int64_t width;
  const int64_t* in_keys;
  const float* in_opt;
  const int64_t* in_last;
  const int64_t* in_freq;
  int32_t* slots;
  int64_t n;
};

template <typename E>  // a value element's bits: uint32_t (f32) or uint16_t (bf16)
__global__ void ImportRunsKernel(RunParams p, const uint32_t* __restrict__ bucket,
                                 const int32_t* __restrict__ row_of,
                                 unsigned long long* __restrict__ counts) {
  __shared__ unsigned long long block_inserted, block_overwritten, block_refused;
  const int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const unsigned lane = threadIdx.x % kWarp;
  unsigned long long inserted = 0, overwritten = 0, refused = 0;
  // Warp-uniform: warp w works when sorted position w starts a bucket's run.
  if (w < p.n && static_cast<uint64_t>(bucket[w]) != p.num_buckets &&
      (w == 0 || bucket[w - 1] != bucket[w])) {
    const uint32_t b = bucket[w];
    const E* in_values = static_cast<const E*>(p.in_values);
    E* values = static_cast<E*>(p.values);
    for (int64_t r = w; r < p.n && bucket[r] == b; ++r) {
      const int64_t i = row_of[r];
      const int64_t key = p.in_keys[i];
      const WarpProbeResult probe = WarpProbe(p.keys, p.bucket_size, p.num_buckets, key, lane);
      const int64_t s = probe.hit >= 0 ? probe.hit : probe.free_slot;
      if (s < 0) {
        ++refused;  // slot stays -1 (prep)
        continue;
      }
      if (probe.hit >= 0) {
        ++overwritten;
      } else {
        ++inserted;
      }
      if (lane == 0) {
        p.keys[s] = key;
        p.last[s] = p.in_last[i];
        p.freq[s] = p.in_freq[i];
        p.slots[i] = static_cast<int32_t>(s);
      }
      for (int64_t c = lane; c < p.dim; c += kWarp) {
        values[s * p.dim + c] = in_values[i * p.dim + c];
      }
      for (int64_t c = lane; c < p.width; c += kWarp) {
        p.opt[s * p.width + c] = p.in_opt[i * p.width + c];
      }
      __syncwarp();  // the next row's probe sees this key
    }
  }
  const bool leader = lane == 0;
  BlockAdd(&block_inserted, leader ? inserted : 0ull, counts + kImInserted);
  BlockAdd(&block_overwritten, leader ? overwritten : 0ull, counts + kImOverwritten);
  BlockAdd(&block_refused, leader ? refused : 0ull, counts + kImRefused);
}

__global__ void FinishKernel(const unsigned long long* __restrict__ counts,
                             int64_t* __restrict__ status, int64_t* __restrict__ counters) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  for (int i = 0; i < kNumImportStatus; ++i) status[i] = static_cast<int64_t>(counts[i]);
  counters[kSize] += static_cast<int64_t>(counts[kImInserted]);
}

}  // namespace

LaunchStatus ImportScratchBytes(const ImportArgs& a, size_t* bytes) {
  return ScratchTotal(LayoutOf, a, bytes);
}

LaunchStatus Import(const ImportArgs& a, void* scratch, size_t scratch_bytes,
                    cudaStream_t stream) {
  Layout l;
  const LaunchStatus st = CheckedLayout(LayoutOf, a, scratch, scratch_bytes, &l);
  if (!st.ok()) return st;
  char* base = static_cast<char*>(scratch);
  auto* counts = reinterpret_cast<unsigned long long*>(base + l.counts);
  HYPERECA_CUDA_TRY(cudaMemsetAsync(counts, 0, kNumImportStatus * 8, stream),
                    "clearing the import counts");
  HYPERECA_CUDA_TRY(cudaMemsetAsync(a.status, 0, static_cast<size_t>(a.status_len) * 8, stream),
                    "clearing the import status");
  if (a.n > 0) {
    PrepKernel<<<static_cast<unsigned>(CeilDiv(a.n, kThreads)), kThreads, 0, stream>>>(
        a.in_keys, a.n, a.table.num_buckets, a.slots, l.sort.KeysIn(base), l.sort.IdxIn(base),
        counts);
    HYPERECA_CUDA_LAUNCHED("launching the import prep kernel");
    const LaunchStatus sorted =
        l.sort.Run(base, nullptr, stream, "sorting the imported rows by bucket");
    if (!sorted.ok()) return sorted;
    RunParams p;
    p.keys = a.table.keys;
    p.in_values = a.in_values;
    p.values = a.values;
    p.opt = a.opt;
    p.last = a.table.last_step;
    p.freq = a.table.freq;
    p.bucket_size = a.table.bucket_size;
    p.num_buckets = a.table.num_buckets;
    p.dim = a.dim;
    p.width = a.width;
    p.in_keys = a.in_keys;
    p.in_opt = a.in_opt;
    p.in_last = a.in_last;
    p.in_freq = a.in_freq;
    p.slots = a.slots;
    p.n = a.n;
    const unsigned blocks = static_cast<unsigned>(CeilDiv(a.n, kWarpsPerBlock));
    if (a.value_type == ValueType::kF32) {
      ImportRunsKernel<uint32_t><<<blocks, kThreads, 0, stream>>>(p, l.sort.KeysOut(base),
                                                                  l.sort.IdxOut(base), counts);
    } else {
      ImportRunsKernel<uint16_t><<<blocks, kThreads, 0, stream>>>(p, l.sort.KeysOut(base),
                                                                  l.sort.IdxOut(base), counts);
    }
    HYPERECA_CUDA_LAUNCHED("launching the import kernel");
  }
  FinishKernel<<<1, 1, 0, stream>>>(counts, a.status, a.table.counters);
  HYPERECA_CUDA_LAUNCHED("launching the import finish kernel");
  return {};
}

}  // namespace hypereca::cuda

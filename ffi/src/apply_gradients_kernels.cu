// apply_gradients on CUDA: the same update as ffi/src/apply_gradients_cpu.cc
// (optimizer formulas of ffi/include/hypereca/optim.h, compiled here without
// FMA contraction and with denormals flushed, so they round as on the CPU;
// the bits of a NaN produced from finite inputs by degenerate hyperparameters
// are not specified).
//
// Duplicate slots are summed deterministically by sort + segmented reduction:
//   1. prep     sort key per query: its slot, or the sentinel C for -1 and
//               out-of-range slots (counted as bad unless -1).
//   2. sort     cub's stable radix sort of (slot, query index): the gradient
//               rows of one slot become one segment, in query order.
//   3. windows  one warp per window of kWindow sorted positions walks its
//               segments. A segment inside the window is summed in query
//               order (the CPU's order: bit-identical sums) and applied at
//               once. The part of a segment that entered from the previous
//               window (the window's carry-in) is summed into partial[w].
//   4. spans    one warp per segment that leaves its first window: with at
//               most kApplyExactRun members it sums them all in query order;
//               a longer one (a hot id) sums its first window's part and then
//               the partials of the windows it covers, in order, so one hot id
//               costs (length / kWindow) row reads on one warp, not length.
// Rows are updated by one warp each (lane = column); the sum of squares of
// row-wise Adagrad is accumulated column by column in the CPU's order.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_kernels.h"
#include "cuda_sort.cuh"
#include "cuda_util.cuh"
#include "hypereca/common.h"
#include "hypereca/optim.h"

namespace hypereca::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / kWarp;
constexpr int64_t kWindow = 64;  // sorted positions per warp in pass 3

struct Layout {
  size_t counts = 0;   // unsigned long long (4,): unique rows, nonfinite, bad slots
  IndexSort<uint32_t> sort;  // (slot or C, query index)
  size_t partial = 0;  // float (windows, D)
  size_t total = 0;
};

int64_t Windows(int64_t n) { return CeilDiv(n, kWindow); }

LaunchStatus LayoutOf(const ApplyGradientsArgs& a, Layout* l) {
  *l = Layout{};
  size_t cursor = 0;
  l->counts = Take(&cursor, 4 * 8);
  if (a.n > 0) {
    const LaunchStatus s =
        l->sort.Plan(&cursor, a.n, static_cast<uint64_t>(a.capacity), true);
    if (!s.ok()) return s;
    l->partial = Take(&cursor, static_cast<size_t>(Windows(a.n) * a.dim) * 4);
  }
  l->total = cursor;
  return {};
}

// ---------------------------------------------------------------- 1. prep
__global__ void PrepKernel(const int32_t* __restrict__ slots, int64_t n, int64_t capacity,
                           uint32_t* __restrict__ key, int32_t* __restrict__ q_in,
                           unsigned long long* __restrict__ counts) {
  __shared__ unsigned long long block_bad;
  const int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  bool bad = false;
  if (q < n) {
    const int32_t s = slots[q];
    const bool valid = s >= 0 && s < capacity;
    bad = !valid && s != -1;
    key[q] = valid ? static_cast<uint32_t>(s) : static_cast<uint32_t>(capacity);
    q_in[q] = static_cast<int32_t>(q);
  }
  BlockAdd(&block_bad, bad ? 1ull : 0ull, counts + kApBadSlots);
}

// ---------------------------------------------------------------- row update
struct Params {
  OptimizerKind kind;
  const float* hp;
  int64_t dim;
  int64_t width;
  int64_t n;
  uint32_t sentinel;  // sort key of ignored slots (= capacity)
  const uint32_t* key;  // sorted slots
  const int32_t* q;     // their query indices
  const float* grads;
  float* partial;
  float* opt;
};

// Columns of one lane in a chunk of the row: c = chunk * 32 * kPer + j * 32 + lane.
template <int kPer>
__device__ __forceinline__ int64_t ColumnOf(int64_t chunk, int j, unsigned lane) {
  return (chunk * kPer + j) * kWarp + lane;
}

// acc += rows [r0, r1) of `src` (row r is src[row_of(r)]) over one chunk, in order.
template <int kPer, typename RowOf>
__device__ __forceinline__ void AddRows(const float* __restrict__ src, int64_t dim, int64_t r0,
                                        int64_t r1, RowOf row_of, int64_t chunk,
                                        unsigned lane, float (&acc)[kPer]) {
#pragma unroll 4
  for (int64_t r = r0; r < r1; ++r) {
    const float* row = src + row_of(r) * dim;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int64_t c = ColumnOf<kPer>(chunk, j, lane);
      if (c < dim) acc[j] += row[c];
    }
  }
}

// The sum of the gradient rows of sorted positions [r0, r1), over one chunk,
// in query order, starting from the first row (as the CPU: copy, then add).
template <int kPer>
__device__ __forceinline__ void SumRun(const Params& p, int64_t r0, int64_t r1, int64_t chunk,
                                       unsigned lane, float (&acc)[kPer]) {
  const int32_t* q = p.q;
  const float* first = p.grads + static_cast<int64_t>(q[r0]) * p.dim;
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int64_t c = ColumnOf<kPer>(chunk, j, lane);
    acc[j] = c < p.dim ? first[c] : 0.f;
  }
  AddRows<kPer>(p.grads, p.dim, r0 + 1, r1, [q](int64_t r) { return int64_t{q[r]}; }, chunk,
                lane, acc);
}

// Sums one segment over one chunk: exact (every member in order) or, for a
// long segment, the members of [r0, r_split) then partial rows [w0, w1).
struct SegmentSum {
  int64_t r0, r1;      // members summed one by one
  int64_t w0 = 0, w1 = 0;  // partial rows added after them
};

template <int kPer>
__device__ __forceinline__ void SumSegment(const Params& p, const SegmentSum& seg,
                                           int64_t chunk, unsigned lane, float (&acc)[kPer]) {
  SumRun<kPer>(p, seg.r0, seg.r1, chunk, lane, acc);
  if (seg.w1 > seg.w0) {
    AddRows<kPer>(p.partial, p.dim, seg.w0, seg.w1, [](int64_t w) { return w; }, chunk, lane,
                  acc);
  }
}

// Applies the summed gradient of one segment to row `slot` with the whole
// warp. Returns true when the row was skipped for a non-finite gradient.
template <typename T, int kPer>
__device__ bool ApplySegment(const Params& p, T* values, int64_t slot, const SegmentSum& seg,
                             unsigned lane) {
  const int64_t dim = p.dim;
  const int64_t chunks = CeilDiv(dim, int64_t{kPer} * kWarp);
  float acc[kPer];
  // Pass 1: finiteness and (row-wise Adagrad) the sum of squares in column order.
  bool finite = true;
  float sq = 0.f;
  const bool rowwise = p.kind == OptimizerKind::kRowwiseAdagrad;
  for (int64_t ch = 0; ch < chunks; ++ch) {
    SumSegment<kPer>(p, seg, ch, lane, acc);
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int64_t c = ColumnOf<kPer>(ch, j, lane);
      if (c < dim) finite = finite && IsFinite(acc[j]);
      if (rowwise) {
        const float g2 = acc[j] * acc[j];
        const int64_t cols = dim - (ch * kPer + j) * kWarp;  // columns left from lane 0
        const int live = cols >= kWarp ? kWarp : (cols > 0 ? static_cast<int>(cols) : 0);
        for (int l = 0; l < live; ++l) sq += __shfl_sync(kFullMask, g2, l);
      }
    }
  }
  if (!__all_sync(kFullMask, finite)) return true;
  float hp[kNumHParams];  // in registers: the formulas index it with constants
#pragma unroll
  for (int i = 0; i < kNumHParams; ++i) hp[i] = p.hp[i];
  float* s = p.opt + slot * p.width;
  T* w = values + slot * dim;
  const RowUpdate r = RowUpdateOf(p.kind, hp, dim, s, sq);
  __syncwarp();
  // Pass 2: the columns (the sums are still in registers for one chunk).
  for (int64_t ch = 0; ch < chunks; ++ch) {
    if (chunks > 1) SumSegment<kPer>(p, seg, ch, lane, acc);
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int64_t c = ColumnOf<kPer>(ch, j, lane);
      if (c < dim) UpdateColumn<T>(p.kind, hp, r, dim, c, w, s, acc[j]);
    }
  }
  __syncwarp();
  if (lane == 0) CommitRow(p.kind, dim, s, r);
  return false;
}

// ---------------------------------------------------------------- 3. windows
// The end (exclusive) of the run of key k that contains position r, looking no
// further than `limit`.
__device__ __forceinline__ int64_t RunEnd(const uint32_t* key, int64_t r, int64_t limit,
                                          uint32_t k) {
  int64_t e = r + 1;
  while (e < limit && key[e] == k) ++e;
  return e;
}

template <typename T, int kPer>
__global__ void WindowKernel(Params p, T* values, unsigned long long* counts) {
  __shared__ unsigned long long block_unique, block_nonfinite;
  const int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const unsigned lane = threadIdx.x % kWarp;
  unsigned long long heads = 0, nonfinite = 0;
  const int64_t p0 = w * kWindow;
  if (p0 < p.n) {  // warp-uniform
    const int64_t p1 = p0 + kWindow < p.n ? p0 + kWindow : p.n;
    int64_t r = p0;
    const uint32_t k0 = p.key[p0];
    if (p0 > 0 && k0 != p.sentinel && p.key[p0 - 1] == k0) {
      // Carry-in: the tail of a segment that began in an earlier window.
      const int64_t e = RunEnd(p.key, p0, p1, k0);
      float acc[kPer];
      const int64_t chunks = CeilDiv(p.dim, int64_t{kPer} * kWarp);
      for (int64_t ch = 0; ch < chunks; ++ch) {
        SumRun<kPer>(p, p0, e, ch, lane, acc);
#pragma unroll
        for (int j = 0; j < kPer; ++j) {
          const int64_t c = ColumnOf<kPer>(ch, j, lane);
          if (c < p.dim) p.partial[w * p.dim + c] = acc[j];
        }
      }
      r = e;
    }
    while (r < p1) {
      const uint32_t k = p.key[r];
      if (k == p.sentinel) break;  // sorted last: nothing valid follows
      const int64_t e = RunEnd(p.key, r, p1, k);
      ++heads;
      if (e == p1 && p1 < p.n && p.key[p1] == k) break;  // leaves the window: pass 4
      SegmentSum seg{r, e};
      nonfinite += ApplySegment<T, kPer>(p, values, k, seg, lane) ? 1 : 0;
      r = e;
    }
  }
  const bool leader = lane == 0;
  BlockAdd(&block_unique, leader ? heads : 0ull, counts + kApUniqueRows);
  BlockAdd(&block_nonfinite, leader ? nonfinite : 0ull, counts + kApNonfinite);
}

// ---------------------------------------------------------------- 4. spans
// First position past the run of key k that starts at r (keys are sorted).
__device__ __forceinline__ int64_t UpperBound(const uint32_t* key, int64_t r, int64_t n,
                                              uint32_t k) {
  int64_t lo = r, hi = n;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (key[mid] <= k) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

template <typename T, int kPer>
__global__ void SpanKernel(Params p, T* values, unsigned long long* counts) {
  __shared__ unsigned long long block_nonfinite;
  const int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const unsigned lane = threadIdx.x % kWarp;
  unsigned long long nonfinite = 0;
  const int64_t p0 = w * kWindow;
  const int64_t p1 = p0 + kWindow;
  // Window w's last segment leaves it (warp-uniform test).
  if (p1 < p.n && p.key[p1 - 1] == p.key[p1] && p.key[p1] != p.sentinel) {
    const uint32_t k = p.key[p1];
    int64_t s = p1 - 1;
    while (s > p0 && p.key[s - 1] == k) --s;
    if (!(s == p0 && p0 > 0 && p.key[p0 - 1] == k)) {  // it began in this window
      const int64_t e = UpperBound(p.key, p1, p.n, k);
      SegmentSum seg{s, e};
      if (e - s > kApplyExactRun) {
        seg.r1 = p1;                    // this window's members, then
        seg.w0 = w + 1;                 // the carry-in partials of the
        seg.w1 = (e - 1) / kWindow + 1;  // windows it covers
      }
      nonfinite += ApplySegment<T, kPer>(p, values, k, seg, lane) ? 1 : 0;
    }
  }
  BlockAdd(&block_nonfinite, lane == 0 ? nonfinite : 0ull, counts + kApNonfinite);
}

__global__ void FinishKernel(const unsigned long long* __restrict__ counts,
                             int64_t* __restrict__ status, int64_t* __restrict__ counters) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  status[kApUniqueRows] = static_cast<int64_t>(counts[kApUniqueRows]);
  status[kApNonfinite] = static_cast<int64_t>(counts[kApNonfinite]);
  status[kApBadSlots] = static_cast<int64_t>(counts[kApBadSlots]);
  counters[kNonfiniteGrads] += static_cast<int64_t>(counts[kApNonfinite]);
}

template <typename T, int kPer>
LaunchStatus RunWindows(const Params& p, T* values, unsigned long long* counts,
                        cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(CeilDiv(Windows(p.n), kWarpsPerBlock));
  WindowKernel<T, kPer><<<blocks, kThreads, 0, stream>>>(p, values, counts);
  HYPERECA_CUDA_LAUNCHED("launching the apply_gradients window kernel");
  SpanKernel<T, kPer><<<blocks, kThreads, 0, stream>>>(p, values, counts);
  HYPERECA_CUDA_LAUNCHED("launching the apply_gradients span kernel");
  return {};
}

template <typename T>
LaunchStatus Run(const ApplyGradientsArgs& a, const Layout& l, char* scratch,
                 cudaStream_t stream) {
  auto* counts = reinterpret_cast<unsigned long long*>(scratch + l.counts);
  HYPERECA_CUDA_TRY(cudaMemsetAsync(counts, 0, 4 * 8, stream), "clearing the counts");
  HYPERECA_CUDA_TRY(cudaMemsetAsync(a.status, 0, static_cast<size_t>(a.status_len) * 8, stream),
                    "clearing the status");
  if (a.n > 0) {
    const IndexSort<uint32_t>& sort = l.sort;
    PrepKernel<<<static_cast<unsigned>(CeilDiv(a.n, kThreads)), kThreads, 0, stream>>>(
        a.slots, a.n, a.capacity, sort.KeysIn(scratch), sort.IdxIn(scratch), counts);
    HYPERECA_CUDA_LAUNCHED("launching the apply_gradients prep kernel");
    const LaunchStatus sorted = sort.Run(scratch, nullptr, stream, "sorting the gradients by slot");
    if (!sorted.ok()) return sorted;
    Params p;
    p.kind = static_cast<OptimizerKind>(a.optimizer);
    p.hp = a.hparams;
    p.dim = a.dim;
    p.width = a.width;
    p.n = a.n;
    p.sentinel = static_cast<uint32_t>(a.capacity);
    p.key = sort.KeysOut(scratch);
    p.q = sort.IdxOut(scratch);
    p.grads = a.grads;
    p.partial = reinterpret_cast<float*>(scratch + l.partial);
    p.opt = a.opt;
    T* values = static_cast<T*>(a.values);
    // Columns per lane held in registers: one chunk covers the row up to 256.
    const LaunchStatus s = a.dim <= kWarp       ? RunWindows<T, 1>(p, values, counts, stream)
                           : a.dim <= 2 * kWarp ? RunWindows<T, 2>(p, values, counts, stream)
                           : a.dim <= 4 * kWarp ? RunWindows<T, 4>(p, values, counts, stream)
                                                : RunWindows<T, 8>(p, values, counts, stream);
    if (!s.ok()) return s;
  }
  FinishKernel<<<1, 1, 0, stream>>>(counts, a.status, a.counters);
  HYPERECA_CUDA_LAUNCHED("launching the apply_gradients finish kernel");
  return {};
}

}  // namespace

LaunchStatus ApplyGradientsScratchBytes(const ApplyGradientsArgs& a, size_t* bytes) {
  return ScratchTotal(LayoutOf, a, bytes);
}

LaunchStatus ApplyGradients(const ApplyGradientsArgs& a, void* scratch, size_t scratch_bytes,
                            cudaStream_t stream) {
  Layout l;
  const LaunchStatus s = CheckedLayout(LayoutOf, a, scratch, scratch_bytes, &l);
  if (!s.ok()) return s;
  char* base = static_cast<char*>(scratch);
  if (a.value_type == ValueType::kF32) return Run<float>(a, l, base, stream);
  return Run<Bf16>(a, l, base, stream);
}

}  // namespace hypereca::cuda

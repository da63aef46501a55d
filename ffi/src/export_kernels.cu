// export on CUDA: the same chunk as ffi/src/export_cpu.cc — the first `chunk`
// resident rows at or after the cursor (in slot order) that pass the score
// predicate, padded past the count, and the cursor to continue from.
//   1. count    one block per tile of kTile slots counts its selected rows.
//   2. scan     exclusive sum of the tile counts: each tile's first position.
//   3. info     count = min(total, chunk); next cursor = capacity when the
//               chunk is not filled (the clamped cursor for chunk 0).
//   4. scatter  tiles that start below the chunk rank their selected rows
//               (block scan) and write keys, scores and the source slot; the
//               row at position chunk-1 sets the next cursor to its slot + 1.
//   5. rows     one warp per output row copies values and state, or writes
//               the padding past the count.
// Every call reads the whole key array once (O(capacity) per chunk): export
// large chunks.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_scan.cuh>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_kernels.h"
#include "cuda_util.cuh"
#include "hypereca/common.h"
#include "hypereca/erase.h"

namespace hypereca::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kItems = 8;  // consecutive slots per thread
constexpr int64_t kTile = kThreads * kItems;

struct Layout {
  size_t tile_count = 0;   // int32 (tiles,)
  size_t tile_offset = 0;  // int32 (tiles,)
  size_t src_slot = 0;     // int32 (chunk,)
  size_t cub_temp = 0;
  size_t cub_temp_bytes = 0;
  size_t total = 0;
};

int64_t Tiles(int64_t capacity) { return CeilDiv(capacity, kTile); }

LaunchStatus LayoutOf(const ExportArgs& a, Layout* l) {
  *l = Layout{};
  const int64_t tiles = Tiles(a.capacity);
  size_t cursor = 0;
  l->tile_count = Take(&cursor, static_cast<size_t>(tiles) * 4);
  l->tile_offset = Take(&cursor, static_cast<size_t>(tiles) * 4);
  l->src_slot = Take(&cursor, static_cast<size_t>(a.chunk) * 4);
  size_t bytes = 0;
  HYPERECA_CUDA_TRY(cub::DeviceScan::ExclusiveSum(nullptr, bytes,
                                                  static_cast<const int32_t*>(nullptr),
                                                  static_cast<int32_t*>(nullptr),
                                                  static_cast<int>(tiles)),
                    "sizing the tile scan");
  l->cub_temp_bytes = bytes < 1 ? 1 : bytes;
  l->cub_temp = Take(&cursor, l->cub_temp_bytes);
  l->total = cursor;
  return {};
}

struct Select {
  const int64_t* keys;
  const int64_t* last;
  const int64_t* freq;
  int64_t capacity;
  ExportMode mode;
  ScorePolicy policy;

  __device__ __forceinline__ bool operator()(int64_t s, int64_t from, int64_t thr) const {
    return s >= from && s < capacity && !IsReserved(keys[s]) &&
           Selected(mode, ScoreOf(policy, last[s], freq[s]), thr);
  }
};

__device__ __forceinline__ int64_t ClampedCursor(const int64_t* cursor, int64_t capacity) {
  const int64_t c = *cursor;
  return c < 0 ? 0 : (c > capacity ? capacity : c);
}

// ---------------------------------------------------------------- 1. count
__global__ void CountKernel(Select sel, const int64_t* __restrict__ cursor,
                            const int64_t* __restrict__ threshold,
                            int32_t* __restrict__ tile_count) {
  using Reduce = cub::BlockReduce<int32_t, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  const int64_t from = ClampedCursor(cursor, sel.capacity);
  const int64_t thr = *threshold;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kTile + threadIdx.x * kItems;
  int32_t mine = 0;
#pragma unroll
  for (int i = 0; i < kItems; ++i) mine += sel(first + i, from, thr) ? 1 : 0;
  const int32_t total = Reduce(temp).Sum(mine);
  if (threadIdx.x == 0) tile_count[blockIdx.x] = total;
}

// ---------------------------------------------------------------- 3. info
__global__ void InfoKernel(const int32_t* __restrict__ tile_count,
                           const int32_t* __restrict__ tile_offset, int64_t tiles,
                           const int64_t* __restrict__ cursor, int64_t capacity, int64_t chunk,
                           int64_t* __restrict__ info) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  const int64_t total =
      static_cast<int64_t>(tile_offset[tiles - 1]) + tile_count[tiles - 1];
  info[0] = total < chunk ? total : chunk;
  // When the chunk fills, the scatter kernel sets the cursor past its last row.
  if (chunk == 0) {
    info[1] = ClampedCursor(cursor, capacity);
  } else if (total < chunk) {
    info[1] = capacity;
  }
}

__global__ void EmptyInfoKernel(int64_t* __restrict__ info) {
  if (blockIdx.x == 0 && threadIdx.x == 0) info[0] = info[1] = 0;
}

// ---------------------------------------------------------------- 4. scatter
__global__ void ScatterKernel(Select sel, const int64_t* __restrict__ cursor,
                              const int64_t* __restrict__ threshold,
                              const int32_t* __restrict__ tile_offset, int64_t chunk,
                              int64_t* __restrict__ out_keys, int64_t* __restrict__ out_last,
                              int64_t* __restrict__ out_freq, int32_t* __restrict__ src_slot,
                              int64_t* __restrict__ info) {
  using Scan = cub::BlockScan<int32_t, kThreads>;
  __shared__ typename Scan::TempStorage temp;
  const int64_t tile_first = tile_offset[blockIdx.x];
  if (tile_first >= chunk) return;  // the whole block: no barrier is reached
  const int64_t from = ClampedCursor(cursor, sel.capacity);
  const int64_t thr = *threshold;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kTile + threadIdx.x * kItems;
  bool take[kItems];
  int32_t mine = 0;
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    take[i] = sel(first + i, from, thr);
    mine += take[i] ? 1 : 0;
  }
  int32_t rank = 0;
  Scan(temp).ExclusiveSum(mine, rank);
  int64_t pos = tile_first + rank;
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    if (!take[i]) continue;
    if (pos < chunk) {
      const int64_t s = first + i;
      out_keys[pos] = sel.keys[s];
      out_last[pos] = sel.last[s];
      out_freq[pos] = sel.freq[s];
      src_slot[pos] = static_cast<int32_t>(s);
      if (pos == chunk - 1) info[1] = s + 1;
    }
    ++pos;
  }
}

// ---------------------------------------------------------------- 5. rows
template <typename E>  // a value element's bits: uint32_t (f32) or uint16_t (bf16)
__global__ void RowsKernel(const E* __restrict__ values, const float* __restrict__ opt,
                           int64_t dim, int64_t width, int64_t chunk,
                           const int32_t* __restrict__ src_slot,
                           const int64_t* __restrict__ info, int64_t* __restrict__ out_keys,
                           E* __restrict__ out_values, float* __restrict__ out_opt,
                           int64_t* __restrict__ out_last, int64_t* __restrict__ out_freq) {
  const int64_t pos = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const unsigned lane = threadIdx.x % kWarp;
  if (pos >= chunk) return;
  if (pos < info[0]) {
    const int64_t s = src_slot[pos];
    for (int64_t c = lane; c < dim; c += kWarp) out_values[pos * dim + c] = values[s * dim + c];
    for (int64_t c = lane; c < width; c += kWarp) out_opt[pos * width + c] = opt[s * width + c];
    return;
  }
  if (lane == 0) {
    out_keys[pos] = kEmptyKey;
    out_last[pos] = 0;
    out_freq[pos] = 0;
  }
  for (int64_t c = lane; c < dim; c += kWarp) out_values[pos * dim + c] = E{0};
  for (int64_t c = lane; c < width; c += kWarp) out_opt[pos * width + c] = 0.f;
}

template <typename E>
LaunchStatus LaunchRows(const ExportArgs& a, const int32_t* src_slot, cudaStream_t stream) {
  constexpr int kWarpsPerBlock = kThreads / kWarp;
  RowsKernel<E><<<static_cast<unsigned>(CeilDiv(a.chunk, kWarpsPerBlock)), kThreads, 0,
                  stream>>>(static_cast<const E*>(a.values), a.opt, a.dim, a.width, a.chunk,
                            src_slot, a.info, a.out_keys, static_cast<E*>(a.out_values),
                            a.out_opt, a.out_last, a.out_freq);
  HYPERECA_CUDA_LAUNCHED("launching the export row kernel");
  return {};
}

}  // namespace

LaunchStatus ExportScratchBytes(const ExportArgs& a, size_t* bytes) {
  Layout l;
  const LaunchStatus s = LayoutOf(a, &l);
  *bytes = l.total;
  return s;
}

LaunchStatus Export(const ExportArgs& a, void* scratch, size_t scratch_bytes,
                    cudaStream_t stream) {
  Layout l;
  LaunchStatus st = LayoutOf(a, &l);
  if (!st.ok()) return st;
  st = CheckScratch(scratch, scratch_bytes, l.total);
  if (!st.ok()) return st;
  char* base = static_cast<char*>(scratch);
  auto* tile_count = reinterpret_cast<int32_t*>(base + l.tile_count);
  auto* tile_offset = reinterpret_cast<int32_t*>(base + l.tile_offset);
  auto* src_slot = reinterpret_cast<int32_t*>(base + l.src_slot);
  const int64_t tiles = Tiles(a.capacity);
  if (tiles == 0) {  // an empty table: count 0, cursor 0, padding only (no empty grids)
    EmptyInfoKernel<<<1, 1, 0, stream>>>(a.info);
    HYPERECA_CUDA_LAUNCHED("launching the export info kernel");
  } else {
    const Select sel{a.keys, a.last_step, a.freq, a.capacity, static_cast<ExportMode>(a.mode),
                     static_cast<ScorePolicy>(a.policy)};
    CountKernel<<<static_cast<unsigned>(tiles), kThreads, 0, stream>>>(sel, a.cursor,
                                                                        a.threshold, tile_count);
    HYPERECA_CUDA_LAUNCHED("launching the export count kernel");
    size_t temp_bytes = l.cub_temp_bytes;
    HYPERECA_CUDA_TRY(cub::DeviceScan::ExclusiveSum(base + l.cub_temp, temp_bytes, tile_count,
                                                    tile_offset, static_cast<int>(tiles),
                                                    stream),
                      "scanning the tile counts");
    InfoKernel<<<1, 1, 0, stream>>>(tile_count, tile_offset, tiles, a.cursor, a.capacity,
                                    a.chunk, a.info);
    HYPERECA_CUDA_LAUNCHED("launching the export info kernel");
    ScatterKernel<<<static_cast<unsigned>(tiles), kThreads, 0, stream>>>(
        sel, a.cursor, a.threshold, tile_offset, a.chunk, a.out_keys, a.out_last, a.out_freq,
        src_slot, a.info);
    HYPERECA_CUDA_LAUNCHED("launching the export scatter kernel");
  }
  if (a.chunk == 0) return {};
  if (a.value_type == ValueType::kF32) return LaunchRows<uint32_t>(a, src_slot, stream);
  return LaunchRows<uint16_t>(a, src_slot, stream);
}

}  // namespace hypereca::cuda

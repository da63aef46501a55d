// gather and gather_tagged on CUDA: rows of given slots (slot -1 or out of
// range -> zeros), from one table or, tagged, from several, the same as
// ffi/src/gather_cpu.cc; gather also counts the slots outside [-1, capacity). One thread per copy unit of the output (16 bytes when
// the row size and every buffer allow it), consecutive threads on consecutive
// units of a row, so reads and writes are coalesced.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_kernels.h"
#include "cuda_util.cuh"

namespace hypereca::cuda {
namespace {

constexpr int kGatherThreads = 256;

__device__ __forceinline__ bool BadSlot(int64_t slot, int64_t capacity) {
  return slot != -1 && (slot < 0 || slot >= capacity);
}

// The thread of a row's first unit counts the row's bad slot (once per row).
template <typename V>
__global__ void GatherKernel(const V* __restrict__ values, int64_t capacity,
                             int64_t units_per_row, const int32_t* __restrict__ slots,
                             int64_t total_units, V* __restrict__ rows,
                             unsigned long long* __restrict__ bad) {
  __shared__ unsigned long long block_bad;
  unsigned long long mine = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < total_units; i += stride) {
    const int64_t r = i / units_per_row;
    const int64_t u = i - r * units_per_row;
    const int64_t slot = slots[r];
    rows[i] = (slot >= 0 && slot < capacity) ? values[slot * units_per_row + u]
                                             : ZeroUnit<V>();
    mine += u == 0 && BadSlot(slot, capacity);
  }
  BlockAdd(&block_bad, mine, bad);  // every thread of the block gets here
}

// The count alone, for rows of zero bytes (nothing to copy).
__global__ void CountBadSlotsKernel(int64_t capacity, const int32_t* __restrict__ slots,
                                    int64_t n, unsigned long long* __restrict__ bad) {
  __shared__ unsigned long long block_bad;
  unsigned long long mine = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < n;
       r += stride) {
    mine += BadSlot(slots[r], capacity);
  }
  BlockAdd(&block_bad, mine, bad);
}

// Tables of one gather_tagged launch: their pointers travel in the kernel's
// parameters; a group with more tables takes several launches.
constexpr int kTablesPerLaunch = 64;

struct TaggedTables {
  const void* base[kTablesPerLaunch];
  int64_t capacity[kTablesPerLaunch];
  int32_t first;        // tag of base[0]
  int32_t count;        // tables in this launch
  int32_t num_tables;   // tables in the call
};

// Rows whose tag falls in this launch's tables are written (their row or
// zeros for a bad slot); the first launch also zeroes rows with a bad tag.
template <typename V>
__global__ void GatherTaggedKernel(TaggedTables t, const int32_t* __restrict__ tags,
                                   const int32_t* __restrict__ slots, int64_t units_per_row,
                                   int64_t total_units, V* __restrict__ rows) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < total_units; i += stride) {
    const int64_t r = i / units_per_row;
    const int64_t u = i - r * units_per_row;
    const int32_t tag = tags[r];
    if (tag < 0 || tag >= t.num_tables) {
      if (t.first == 0) rows[i] = ZeroUnit<V>();
      continue;
    }
    const int32_t k = tag - t.first;
    if (k < 0 || k >= t.count) continue;  // another launch's table
    const int64_t slot = slots[r];
    rows[i] = (slot >= 0 && slot < t.capacity[k])
                  ? static_cast<const V*>(t.base[k])[slot * units_per_row + u]
                  : ZeroUnit<V>();
  }
}

}  // namespace

LaunchStatus Gather(const GatherArgs& a, cudaStream_t stream) {
  auto* bad = reinterpret_cast<unsigned long long*>(a.bad_slots);
  HYPERECA_CUDA_TRY(cudaMemsetAsync(bad, 0, 8, stream), "clearing the gather bad-slot count");
  const int64_t row_bytes = a.dim * static_cast<int64_t>(ValueBytes(a.value_type));
  const int64_t total_bytes = row_bytes * a.n;
  if (a.n == 0) return {};
  if (total_bytes == 0) {
    CountBadSlotsKernel<<<GridFor(a.n, kGatherThreads), kGatherThreads, 0, stream>>>(
        a.capacity, a.slots, a.n, bad);
    HYPERECA_CUDA_LAUNCHED("launching the gather bad-slot count kernel");
    return {};
  }
  const int unit = CopyUnitBytes(row_bytes, static_cast<int>(ValueBytes(a.value_type)),
                                 a.values, a.rows);
  return DispatchValueAndUnit(a.value_type, unit, [&](auto, auto unit_tag) -> LaunchStatus {
    using V = decltype(unit_tag);
    const int64_t units_per_row = row_bytes / static_cast<int64_t>(sizeof(V));
    const int64_t total = units_per_row * a.n;
    GatherKernel<V><<<GridFor(total, kGatherThreads), kGatherThreads, 0, stream>>>(
        static_cast<const V*>(a.values), a.capacity, units_per_row, a.slots, total,
        static_cast<V*>(a.rows), bad);
    HYPERECA_CUDA_LAUNCHED("launching the gather kernel");
    return {};
  });
}

LaunchStatus GatherTagged(const GatherTaggedArgs& a, cudaStream_t stream) {
  const int64_t row_bytes = a.dim * static_cast<int64_t>(ValueBytes(a.value_type));
  if (row_bytes * a.n == 0) return {};
  const int min_unit = static_cast<int>(ValueBytes(a.value_type));
  int unit = CopyUnitBytes(row_bytes, min_unit, a.rows, a.rows);
  for (int64_t t = 0; t < a.num_tables; ++t) {
    const int u = CopyUnitBytes(row_bytes, min_unit, a.rows, a.tables[t]);
    unit = u < unit ? u : unit;
  }
  return DispatchValueAndUnit(a.value_type, unit, [&](auto, auto unit_tag) -> LaunchStatus {
    using V = decltype(unit_tag);
    const int64_t units_per_row = row_bytes / static_cast<int64_t>(sizeof(V));
    const int64_t total = units_per_row * a.n;
    for (int64_t first = 0; first < a.num_tables; first += kTablesPerLaunch) {
      TaggedTables t{};
      t.first = static_cast<int32_t>(first);
      t.num_tables = static_cast<int32_t>(a.num_tables);
      t.count = static_cast<int32_t>(
          a.num_tables - first < kTablesPerLaunch ? a.num_tables - first : kTablesPerLaunch);
      for (int32_t k = 0; k < t.count; ++k) {
        t.base[k] = a.tables[first + k];
        t.capacity[k] = a.capacities[first + k];
      }
      GatherTaggedKernel<V><<<GridFor(total, kGatherThreads), kGatherThreads, 0, stream>>>(
          t, a.tags, a.slots, units_per_row, total, static_cast<V*>(a.rows));
      HYPERECA_CUDA_LAUNCHED("launching the gather_tagged kernel");
    }
    return {};
  });
}

}  // namespace hypereca::cuda

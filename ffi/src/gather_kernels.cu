// gather on CUDA: rows of given slots (slot -1 or out of range -> zeros), the
// same as ffi/src/gather_cpu.cc. One thread per copy unit of the output (16
// bytes when the row size and the buffers allow it), consecutive threads on
// consecutive units of a row, so reads and writes are coalesced.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_kernels.h"
#include "cuda_util.cuh"

namespace hypereca::cuda {
namespace {

constexpr int kGatherThreads = 256;

template <typename V>
__global__ void GatherKernel(const V* __restrict__ values, int64_t capacity,
                             int64_t units_per_row, const int32_t* __restrict__ slots,
                             int64_t total_units, V* __restrict__ rows) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < total_units; i += stride) {
    const int64_t r = i / units_per_row;
    const int64_t u = i - r * units_per_row;
    const int64_t slot = slots[r];
    rows[i] = (slot >= 0 && slot < capacity) ? values[slot * units_per_row + u]
                                             : ZeroUnit<V>();
  }
}

}  // namespace

LaunchStatus Gather(const GatherArgs& a, cudaStream_t stream) {
  const int64_t row_bytes = a.dim * static_cast<int64_t>(ValueBytes(a.value_type));
  const int64_t total_bytes = row_bytes * a.n;
  if (total_bytes == 0) return {};
  const int unit = CopyUnitBytes(row_bytes, static_cast<int>(ValueBytes(a.value_type)),
                                 a.values, a.rows);
  return DispatchValueAndUnit(a.value_type, unit, [&](auto, auto unit_tag) -> LaunchStatus {
    using V = decltype(unit_tag);
    const int64_t units_per_row = row_bytes / static_cast<int64_t>(sizeof(V));
    const int64_t total = units_per_row * a.n;
    GatherKernel<V><<<GridFor(total, kGatherThreads), kGatherThreads, 0, stream>>>(
        static_cast<const V*>(a.values), a.capacity, units_per_row, a.slots, total,
        static_cast<V*>(a.rows));
    HYPERECA_CUDA_LAUNCHED("launching the gather kernel");
    return {};
  });
}

}  // namespace hypereca::cuda

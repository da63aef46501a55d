// Device-side helpers shared by the *_kernels.cu files (nvcc only).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "cuda_kernels.h"
#include "hypereca/common.h"
#include "hypereca/dtype.h"
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

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

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

}  // namespace hypereca::cuda

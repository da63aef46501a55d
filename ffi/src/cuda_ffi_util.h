// Helpers shared by the XLA FFI handlers of the CUDA custom calls (the
// *_cuda.cc files, one per op family as the CPU's *_cpu.cc). Operands,
// results and attributes of every handler are exactly those of its CPU twin
// (same names, order and dtypes), so one jax.ffi.ffi_call serves both
// platforms; the shape checks and their messages are the CPU's (table_args.h).
// The kernels live in *_kernels.cu behind the plain launchers of
// cuda_kernels.h (nvcc never sees the XLA header). Every launch goes on XLA's
// stream; nothing synchronizes.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "cuda_kernels.h"
#include "hypereca/probe.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca::cuda {

namespace ffi = xla::ffi;

inline ffi::Error InvalidArgument(const std::string& msg) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, msg);
}

inline ffi::Error CudaFailure(const char* op, const LaunchStatus& s) {
  return ffi::Error::Internal(std::string(op) + ": CUDA error while " + s.what + ": " +
                              cudaGetErrorName(s.err) + " (" + cudaGetErrorString(s.err) +
                              ")");
}

// The storage dtype of a values buffer, as the CPU's DispatchValueType.
inline std::optional<ValueType> ValueTypeOf(ffi::DataType dtype) {
  switch (dtype) {
    case ffi::DataType::F32: return ValueType::kF32;
    case ffi::DataType::BF16: return ValueType::kBf16;
    default: return std::nullopt;
  }
}

inline ffi::Error BadValueType(const char* op) {
  return InvalidArgument(std::string(op) + ": table values must be float32 or bfloat16");
}

// Copies src into dst on the stream unless XLA already aliased them.
inline LaunchStatus CopyIfDistinct(void* dst, const void* src, size_t bytes,
                                   cudaStream_t stream) {
  if (dst == src || bytes == 0) return {};
  const cudaError_t err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream);
  return LaunchStatus{err, "copying a table array into its output"};
}

// Device scratch of `bytes` from XLA's allocator, based at a 256-byte
// boundary (the launchers' layouts assume it; XLA's FFI allocator accepts
// alignments up to 16 only, so over-allocate). nullptr for 0 bytes.
inline ffi::ErrorOr<void*> AllocateScratch(ffi::ScratchAllocator& scratch, size_t bytes,
                                           const char* op) {
  if (bytes == 0) return static_cast<void*>(nullptr);
  constexpr size_t kBaseAlign = 256;
  std::optional<void*> got = scratch.Allocate(bytes + kBaseAlign, 16);
  if (!got.has_value() || *got == nullptr) {
    return ffi::Unexpected(ffi::Error(
        ffi::ErrorCode::kResourceExhausted,
        std::string(op) + ": could not allocate " + std::to_string(bytes + kBaseAlign) +
            " bytes of device scratch memory"));
  }
  const uintptr_t base = reinterpret_cast<uintptr_t>(*got);
  return reinterpret_cast<void*>((base + kBaseAlign - 1) / kBaseAlign * kBaseAlign);
}

// Sizes the launcher's scratch, allocates it and enqueues the launch.
template <typename Args, typename SizeFn, typename LaunchFn>
ffi::Error LaunchWithScratch(const char* op, const Args& a, ffi::ScratchAllocator& scratch,
                             cudaStream_t stream, SizeFn size_fn, LaunchFn launch_fn) {
  size_t bytes = 0;
  LaunchStatus s = size_fn(a, &bytes);
  if (!s.ok()) return CudaFailure(op, s);
  auto mem = AllocateScratch(scratch, bytes, op);
  if (mem.has_error()) return mem.error();
  s = launch_fn(a, mem.value(), bytes, stream);
  if (!s.ok()) return CudaFailure(op, s);
  return ffi::Error::Success();
}

// Sorted with 32-bit indices on the GPU.
inline ffi::Error CheckIndexRange(const char* op, int64_t n, const char* what) {
  if (n > (int64_t{1} << 31) - 1) {
    return InvalidArgument(std::string(op) + ": at most 2^31-1 " + what + " per call on CUDA");
  }
  return ffi::Error::Success();
}

// The outputs that hold a table's keys, scores and counters after the call,
// filled with the inputs' contents (copied unless XLA aliased them), as the
// TableMeta of geometry g.
inline ffi::ErrorOr<TableMeta> MetaOutputs(const char* op, const TableGeometry& g,
                                           ffi::BufferR1<ffi::S64> keys,
                                           ffi::BufferR1<ffi::S64> last,
                                           ffi::BufferR1<ffi::S64> freq,
                                           ffi::BufferR1<ffi::S64> counters,
                                           ffi::ResultBufferR1<ffi::S64>& keys_out,
                                           ffi::ResultBufferR1<ffi::S64>& last_out,
                                           ffi::ResultBufferR1<ffi::S64>& freq_out,
                                           ffi::ResultBufferR1<ffi::S64>& counters_out,
                                           cudaStream_t stream) {
  for (const LaunchStatus& s :
       {CopyIfDistinct(keys_out->typed_data(), keys.typed_data(), keys.size_bytes(), stream),
        CopyIfDistinct(last_out->typed_data(), last.typed_data(), last.size_bytes(), stream),
        CopyIfDistinct(freq_out->typed_data(), freq.typed_data(), freq.size_bytes(), stream),
        CopyIfDistinct(counters_out->typed_data(), counters.typed_data(),
                       counters.size_bytes(), stream)}) {
    if (!s.ok()) return ffi::Unexpected(CudaFailure(op, s));
  }
  TableMeta t;
  t.keys = keys_out->typed_data();
  t.last_step = last_out->typed_data();
  t.freq = freq_out->typed_data();
  t.counters = counters_out->typed_data();
  t.capacity = g.capacity;
  t.bucket_size = g.bucket_size;
  t.num_buckets = g.num_buckets;
  return t;
}

}  // namespace hypereca::cuda

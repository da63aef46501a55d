// unique on CUDA: the XLA FFI handler (checks, launch of unique_kernels.cu).
// Helpers and conventions: cuda_ffi_util.h.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda_ffi_util.h"
#include "cuda_kernels.h"
#include "table_args.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca::cuda {
namespace {

ffi::Error UniqueImpl(cudaStream_t stream, ffi::ScratchAllocator scratch,
                      ffi::BufferR1<ffi::S64> keys, ffi::ResultBufferR1<ffi::S64> uniq,
                      ffi::ResultBufferR1<ffi::S32> inverse,
                      ffi::ResultBufferR0<ffi::S32> count) {
  if (auto err = CheckUnique(keys, uniq, inverse); err.failure()) return err;
  UniqueArgs a;
  a.keys = keys.typed_data();
  a.n = keys.dimensions()[0];
  a.uniq = uniq->typed_data();
  a.inverse = inverse->typed_data();
  a.count = count->typed_data();
  return LaunchWithScratch("hypereca_unique", a, scratch, stream, UniqueScratchBytes, Unique);
}

}  // namespace
}  // namespace hypereca::cuda

// clang-format off
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaUniqueCuda, hypereca::cuda::UniqueImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
        .Ctx<xla::ffi::ScratchAllocator>()
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys    (n,)
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // unique  (n,) first-occurrence order, kEmptyKey past count
        .Ret<xla::ffi::BufferR1<xla::ffi::S32>>()   // inverse (n,) -1 for padding
        .Ret<xla::ffi::BufferR0<xla::ffi::S32>>()); // count   ()
// clang-format on

// find_or_insert on CUDA: the XLA FFI handler (checks, table copies, launch
// of find_or_insert_kernels.cu). Helpers and conventions: cuda_ffi_util.h.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <optional>

#include "cuda_ffi_util.h"
#include "cuda_kernels.h"
#include "table_args.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca::cuda {
namespace {

ffi::Error FindOrInsertImpl(
    cudaStream_t stream, ffi::ScratchAllocator scratch, ffi::BufferR1<ffi::S64> keys,
    ffi::AnyBuffer values, ffi::BufferR2<ffi::F32> opt, ffi::BufferR1<ffi::S64> last,
    ffi::BufferR1<ffi::S64> freq, ffi::BufferR1<ffi::S64> counters,
    ffi::BufferR1<ffi::S64> query, ffi::BufferR0<ffi::S64> step,
    ffi::BufferR0<ffi::S64> pin_from, ffi::BufferR1<ffi::F32> opt_init,
    ffi::ResultBufferR1<ffi::S64> keys_out, ffi::Result<ffi::AnyBuffer> values_out,
    ffi::ResultBufferR2<ffi::F32> opt_out, ffi::ResultBufferR1<ffi::S64> last_out,
    ffi::ResultBufferR1<ffi::S64> freq_out, ffi::ResultBufferR1<ffi::S64> counters_out,
    ffi::ResultBufferR1<ffi::S32> slots, ffi::ResultBufferR1<ffi::PRED> found,
    ffi::ResultBufferR1<ffi::S64> ev_keys, ffi::Result<ffi::AnyBuffer> ev_values,
    ffi::ResultBufferR2<ffi::F32> ev_opt, ffi::ResultBufferR1<ffi::S64> ev_last,
    ffi::ResultBufferR1<ffi::S64> ev_freq, ffi::ResultBufferR1<ffi::S64> status,
    int64_t seed, int32_t init_kind, float init_scale, int32_t policy,
    int64_t bucket_size) {
  constexpr const char* kOp = "hypereca_find_or_insert";
  auto shape_or = CheckTable(kOp, bucket_size, keys, values, opt, last, freq, counters);
  if (shape_or.has_error()) return shape_or.error();
  const TableShape shape = shape_or.value();
  if (auto err = CheckFindOrInsert(shape, values, query, opt_init, values_out, slots, found,
                                   ev_keys, ev_values, ev_opt, ev_last, ev_freq, status,
                                   init_kind, policy);
      err.failure()) {
    return err;
  }
  const int64_t n = query.dimensions()[0];
  const int64_t ev_capacity = ev_keys->dimensions()[0];
  const std::optional<ValueType> vt = ValueTypeOf(values.element_type());
  if (!vt) return BadValueType(kOp);
  if (auto err = CheckIndexRange(kOp, n, "queries"); err.failure()) return err;

  const int64_t C = shape.geometry.capacity;
  for (const LaunchStatus& s :
       {CopyIfDistinct(keys_out->typed_data(), keys.typed_data(), C * 8, stream),
        CopyIfDistinct(values_out->untyped_data(), values.untyped_data(), values.size_bytes(),
                       stream),
        CopyIfDistinct(opt_out->typed_data(), opt.typed_data(), opt.size_bytes(), stream),
        CopyIfDistinct(last_out->typed_data(), last.typed_data(), C * 8, stream),
        CopyIfDistinct(freq_out->typed_data(), freq.typed_data(), C * 8, stream),
        CopyIfDistinct(counters_out->typed_data(), counters.typed_data(),
                       counters.size_bytes(), stream)}) {
    if (!s.ok()) return CudaFailure(kOp, s);
  }

  FindOrInsertArgs a;
  a.keys = keys_out->typed_data();
  a.values = values_out->untyped_data();
  a.opt = opt_out->typed_data();
  a.last_step = last_out->typed_data();
  a.freq = freq_out->typed_data();
  a.counters = counters_out->typed_data();
  a.capacity = C;
  a.bucket_size = shape.geometry.bucket_size;
  a.num_buckets = shape.geometry.num_buckets;
  a.dim = shape.dim;
  a.width = shape.state_width;
  a.value_type = *vt;
  a.query = query.typed_data();
  a.n = n;
  a.step = step.typed_data();
  a.pin_from = pin_from.typed_data();
  a.opt_init = opt_init.typed_data();
  a.seed = static_cast<uint64_t>(seed);
  a.init_kind = init_kind;
  a.init_scale = init_scale;
  a.policy = policy;
  a.slots = slots->typed_data();
  a.found = found->typed_data();
  a.ev_keys = ev_keys->typed_data();
  a.ev_values = ev_values->untyped_data();
  a.ev_opt = ev_opt->typed_data();
  a.ev_last = ev_last->typed_data();
  a.ev_freq = ev_freq->typed_data();
  a.ev_capacity = ev_capacity;
  a.status = status->typed_data();
  a.status_len = status->dimensions()[0];

  return LaunchWithScratch(kOp, a, scratch, stream, FindOrInsertScratchBytes, FindOrInsert);
}

}  // namespace
}  // namespace hypereca::cuda

// clang-format off
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaFindOrInsertCuda, hypereca::cuda::FindOrInsertImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
        .Ctx<xla::ffi::ScratchAllocator>()
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()    // keys       (C,)
        .Arg<xla::ffi::AnyBuffer>()                  // values     (C, D) f32|bf16
        .Arg<xla::ffi::BufferR2<xla::ffi::F32>>()    // opt_state  (C, K)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()    // last_step  (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()    // freq       (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()    // counters   (16,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()    // query      (n,)
        .Arg<xla::ffi::BufferR0<xla::ffi::S64>>()    // step       () device scalar, read by the kernels
        .Arg<xla::ffi::BufferR0<xla::ffi::S64>>()    // pin_from   () rows accessed at >= it are not evicted
        .Arg<xla::ffi::BufferR1<xla::ffi::F32>>()    // opt_init   (K,) state of a new row
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()    // keys       aliased
        .Ret<xla::ffi::AnyBuffer>()                  // values     aliased
        .Ret<xla::ffi::BufferR2<xla::ffi::F32>>()    // opt_state  aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()    // last_step  aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()    // freq       aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()    // counters   aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S32>>()    // slots      (n,) -1: padding, reserved, refused
        .Ret<xla::ffi::BufferR1<xla::ffi::PRED>>()   // found      (n,) resident before this call
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()    // evicted keys   (E,) kEmptyKey past the count
        .Ret<xla::ffi::AnyBuffer>()                  // evicted values (E, D) unspecified past the count
        .Ret<xla::ffi::BufferR2<xla::ffi::F32>>()    // evicted state  (E, K) unspecified past the count
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()    // evicted last_step (E,)
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()    // evicted freq   (E,)
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()    // status (8,) see InsertStatus
        .Attr<int64_t>("seed")                       // table seed of the row initializer
        .Attr<int32_t>("init_kind")                  // InitKind
        .Attr<float>("init_scale")                   // initializer scale
        .Attr<int32_t>("policy")                     // ScorePolicy
        .Attr<int64_t>("bucket_size"));              // slots per bucket (power of two)
// clang-format on

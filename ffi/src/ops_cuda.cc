// XLA FFI handlers of the CUDA custom calls: find_or_insert, find, gather.
// Operands, results and attributes are exactly those of the CPU handlers (same
// names, order and dtypes), so one jax.ffi.ffi_call serves both platforms; the
// shape checks and their messages are the CPU's. The kernels live in
// *_kernels.cu behind the plain launchers of cuda_kernels.h (nvcc never sees
// the XLA header). Every launch goes on XLA's stream; nothing synchronizes.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <optional>
#include <string>

#include "cuda_kernels.h"
#include "hypereca/common.h"
#include "hypereca/probe.h"
#include "table_args.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca::cuda {
namespace {

namespace ffi = xla::ffi;

ffi::Error InvalidArgument(const std::string& msg) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, msg);
}

ffi::Error CudaFailure(const char* op, const LaunchStatus& s) {
  return ffi::Error::Internal(std::string(op) + ": CUDA error while " + s.what + ": " +
                              cudaGetErrorName(s.err) + " (" + cudaGetErrorString(s.err) +
                              ")");
}

// The storage dtype of a values buffer, as the CPU's DispatchValueType.
std::optional<ValueType> ValueTypeOf(ffi::DataType dtype) {
  switch (dtype) {
    case ffi::DataType::F32: return ValueType::kF32;
    case ffi::DataType::BF16: return ValueType::kBf16;
    default: return std::nullopt;
  }
}

ffi::Error BadValueType(const char* op) {
  return InvalidArgument(std::string(op) + ": table values must be float32 or bfloat16");
}

// Copies src into dst on the stream unless XLA already aliased them.
LaunchStatus CopyIfDistinct(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  if (dst == src || bytes == 0) return {};
  const cudaError_t err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream);
  return LaunchStatus{err, "copying a table array into its output"};
}

// ---------------------------------------------------------------- find_or_insert
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
  // CUDA only: the queries are sorted with 32-bit indices.
  if (n > (int64_t{1} << 31) - 1) {
    return InvalidArgument("hypereca_find_or_insert: at most 2^31-1 queries per call");
  }

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

  size_t bytes = 0;
  LaunchStatus s = FindOrInsertScratchBytes(a, &bytes);
  if (!s.ok()) return CudaFailure(kOp, s);
  void* mem = nullptr;
  if (bytes > 0) {
    // XLA's FFI allocator accepts alignments up to 16 only: over-allocate and
    // align the base to the 256 bytes the launcher's layout assumes.
    constexpr size_t kBaseAlign = 256;
    std::optional<void*> got = scratch.Allocate(bytes + kBaseAlign, 16);
    if (!got.has_value() || *got == nullptr) {
      return ffi::Error(ffi::ErrorCode::kResourceExhausted,
                        std::string(kOp) + ": could not allocate " +
                            std::to_string(bytes + kBaseAlign) +
                            " bytes of device scratch memory");
    }
    const uintptr_t base = reinterpret_cast<uintptr_t>(*got);
    mem = reinterpret_cast<void*>((base + kBaseAlign - 1) / kBaseAlign * kBaseAlign);
  }
  s = FindOrInsert(a, mem, bytes, stream);
  if (!s.ok()) return CudaFailure(kOp, s);
  return ffi::Error::Success();
}

// ---------------------------------------------------------------- find
ffi::Error FindImpl(cudaStream_t stream, ffi::BufferR1<ffi::S64> keys, ffi::AnyBuffer values,
                    ffi::BufferR1<ffi::S64> query, ffi::Result<ffi::AnyBuffer> rows,
                    ffi::ResultBufferR1<ffi::S32> slots, ffi::ResultBufferR1<ffi::PRED> found,
                    int64_t seed, int32_t init_kind, float init_scale, int64_t bucket_size,
                    bool miss_init) {
  constexpr const char* kOp = "hypereca_find";
  bool want_rows = true;
  auto g_or = CheckFind(keys, values, query, rows, bucket_size, init_kind, &want_rows);
  if (g_or.has_error()) return g_or.error();
  const TableGeometry g = g_or.value();
  auto vd = values.dimensions();
  const int64_t n = query.dimensions()[0];
  const std::optional<ValueType> vt = ValueTypeOf(values.element_type());
  if (!vt) return BadValueType(kOp);
  FindArgs a;
  a.keys = keys.typed_data();
  a.values = values.untyped_data();
  a.capacity = g.capacity;
  a.bucket_size = g.bucket_size;
  a.num_buckets = g.num_buckets;
  a.dim = vd[1];
  a.value_type = *vt;
  a.query = query.typed_data();
  a.n = n;
  a.seed = static_cast<uint64_t>(seed);
  a.init_kind = init_kind;
  a.init_scale = init_scale;
  a.miss_init = miss_init;
  a.want_rows = want_rows;
  a.rows = rows->untyped_data();
  a.slots = slots->typed_data();
  a.found = found->typed_data();
  const LaunchStatus s = Find(a, stream);
  if (!s.ok()) return CudaFailure(kOp, s);
  return ffi::Error::Success();
}

// ---------------------------------------------------------------- gather
ffi::Error GatherImpl(cudaStream_t stream, ffi::AnyBuffer values,
                      ffi::BufferR1<ffi::S32> slots, ffi::Result<ffi::AnyBuffer> rows) {
  constexpr const char* kOp = "hypereca_gather";
  auto vd = values.dimensions();
  const int64_t n = slots.dimensions()[0];
  if (vd.size() != 2 || rows->dimensions().size() != 2 || rows->dimensions()[0] != n ||
      rows->dimensions()[1] != vd[1] || rows->element_type() != values.element_type()) {
    return InvalidArgument("hypereca_gather: rows must be (n, dim) of the table's dtype");
  }
  const std::optional<ValueType> vt = ValueTypeOf(values.element_type());
  if (!vt) return BadValueType(kOp);
  GatherArgs a;
  a.values = values.untyped_data();
  a.capacity = vd[0];
  a.dim = vd[1];
  a.value_type = *vt;
  a.slots = slots.typed_data();
  a.n = n;
  a.rows = rows->untyped_data();
  const LaunchStatus s = Gather(a, stream);
  if (!s.ok()) return CudaFailure(kOp, s);
  return ffi::Error::Success();
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaFindCuda, hypereca::cuda::FindImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys    (C,)
        .Arg<xla::ffi::AnyBuffer>()                 // values  (C, D)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // query   (n,)
        .Ret<xla::ffi::AnyBuffer>()                 // rows    (n, D), or (0, D): slots and found only
        .Ret<xla::ffi::BufferR1<xla::ffi::S32>>()   // slots   (n,) -1 on a miss
        .Ret<xla::ffi::BufferR1<xla::ffi::PRED>>()  // found   (n,)
        .Attr<int64_t>("seed")                      // table seed (miss_init)
        .Attr<int32_t>("init_kind")                 // InitKind (miss_init)
        .Attr<float>("init_scale")                  // initializer scale (miss_init)
        .Attr<int64_t>("bucket_size")               // slots per bucket
        .Attr<bool>("miss_init"));                  // misses get their would-be initial row

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaGatherCuda, hypereca::cuda::GatherImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
        .Arg<xla::ffi::AnyBuffer>()                // values (C, D)
        .Arg<xla::ffi::BufferR1<xla::ffi::S32>>()  // slots  (n,)
        .Ret<xla::ffi::AnyBuffer>());              // rows   (n, D)
// clang-format on

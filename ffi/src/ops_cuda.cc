// XLA FFI handlers of the CUDA custom calls: every op of the CPU module.
// Operands, results and attributes are exactly those of the CPU handlers (same
// names, order and dtypes), so one jax.ffi.ffi_call serves both platforms; the
// shape checks and their messages are the CPU's. The kernels live in
// *_kernels.cu behind the plain launchers of cuda_kernels.h (nvcc never sees
// the XLA header). Every launch goes on XLA's stream; nothing synchronizes.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

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

// Device scratch of `bytes` from XLA's allocator, based at a 256-byte
// boundary (the launchers' layouts assume it; XLA's FFI allocator accepts
// alignments up to 16 only, so over-allocate). nullptr for 0 bytes.
ffi::ErrorOr<void*> AllocateScratch(ffi::ScratchAllocator& scratch, size_t bytes,
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
ffi::Error CheckIndexRange(const char* op, int64_t n, const char* what) {
  if (n > (int64_t{1} << 31) - 1) {
    return InvalidArgument(std::string(op) + ": at most 2^31-1 " + what + " per call on CUDA");
  }
  return ffi::Error::Success();
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

// ---------------------------------------------------------------- gather_tagged
ffi::Error GatherTaggedImpl(cudaStream_t stream, ffi::BufferR1<ffi::S32> tags,
                            ffi::BufferR1<ffi::S32> slots, ffi::RemainingArgs tables,
                            ffi::Result<ffi::AnyBuffer> rows) {
  constexpr const char* kOp = "hypereca_gather_tagged";
  std::vector<const void*> base;
  std::vector<int64_t> capacity;
  if (auto err = CheckGatherTagged(tags, slots, tables, rows, &base, &capacity);
      err.failure()) {
    return err;
  }
  const std::optional<ValueType> vt = ValueTypeOf(rows->element_type());
  if (!vt) return BadValueType(kOp);
  GatherTaggedArgs a;
  a.tables = base.data();
  a.capacities = capacity.data();
  a.num_tables = static_cast<int64_t>(base.size());
  a.dim = rows->dimensions()[1];
  a.value_type = *vt;
  a.tags = tags.typed_data();
  a.slots = slots.typed_data();
  a.n = slots.dimensions()[0];
  a.rows = rows->untyped_data();
  const LaunchStatus s = GatherTagged(a, stream);
  if (!s.ok()) return CudaFailure(kOp, s);
  return ffi::Error::Success();
}

// ---------------------------------------------------------------- apply_gradients
ffi::Error ApplyGradientsImpl(cudaStream_t stream, ffi::ScratchAllocator scratch,
                              ffi::AnyBuffer values, ffi::BufferR2<ffi::F32> opt,
                              ffi::BufferR1<ffi::S64> counters, ffi::BufferR1<ffi::S32> slots,
                              ffi::BufferR2<ffi::F32> grads, ffi::BufferR1<ffi::F32> hparams,
                              ffi::Result<ffi::AnyBuffer> values_out,
                              ffi::ResultBufferR2<ffi::F32> opt_out,
                              ffi::ResultBufferR1<ffi::S64> counters_out,
                              ffi::ResultBufferR1<ffi::S64> status, int32_t optimizer) {
  constexpr const char* kOp = "hypereca_apply_gradients";
  auto shape_or = CheckApplyGradients(values, opt, counters, slots, grads, hparams, values_out,
                                      status, optimizer);
  if (shape_or.has_error()) return shape_or.error();
  const ApplyShape shape = shape_or.value();
  const std::optional<ValueType> vt = ValueTypeOf(values.element_type());
  if (!vt) return BadValueType(kOp);
  const int64_t n = slots.dimensions()[0];
  if (auto err = CheckIndexRange(kOp, n, "gradient rows"); err.failure()) return err;
  if (auto err = CheckIndexRange(kOp, shape.capacity, "table rows"); err.failure()) return err;
  for (const LaunchStatus& s :
       {CopyIfDistinct(values_out->untyped_data(), values.untyped_data(), values.size_bytes(),
                       stream),
        CopyIfDistinct(opt_out->typed_data(), opt.typed_data(), opt.size_bytes(), stream),
        CopyIfDistinct(counters_out->typed_data(), counters.typed_data(),
                       counters.size_bytes(), stream)}) {
    if (!s.ok()) return CudaFailure(kOp, s);
  }
  ApplyGradientsArgs a;
  a.values = values_out->untyped_data();
  a.opt = opt_out->typed_data();
  a.counters = counters_out->typed_data();
  a.capacity = shape.capacity;
  a.dim = shape.dim;
  a.width = shape.width;
  a.value_type = *vt;
  a.optimizer = optimizer;
  a.slots = slots.typed_data();
  a.grads = grads.typed_data();
  a.n = n;
  a.hparams = hparams.typed_data();
  a.status = status->typed_data();
  a.status_len = status->dimensions()[0];
  return LaunchWithScratch(kOp, a, scratch, stream, ApplyGradientsScratchBytes,
                           ApplyGradients);
}

// ---------------------------------------------------------------- erase / erase_if
// The outputs that hold a table's keys, scores and counters after the call,
// filled with the inputs' contents (copied unless XLA aliased them), as the
// TableMeta of geometry g.
ffi::ErrorOr<TableMeta> MetaOutputs(const char* op, const TableGeometry& g,
                                    ffi::BufferR1<ffi::S64> keys, ffi::BufferR1<ffi::S64> last,
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

ffi::Error EraseImpl(cudaStream_t stream, ffi::ScratchAllocator scratch,
                     ffi::BufferR1<ffi::S64> keys, ffi::BufferR1<ffi::S64> last,
                     ffi::BufferR1<ffi::S64> freq, ffi::BufferR1<ffi::S64> counters,
                     ffi::BufferR1<ffi::S64> query, ffi::ResultBufferR1<ffi::S64> keys_out,
                     ffi::ResultBufferR1<ffi::S64> last_out,
                     ffi::ResultBufferR1<ffi::S64> freq_out,
                     ffi::ResultBufferR1<ffi::S64> counters_out,
                     ffi::ResultBufferR1<ffi::PRED> erased, int64_t bucket_size) {
  constexpr const char* kOp = "hypereca_erase";
  auto g_or = CheckTableMeta(kOp, bucket_size, keys, last, freq, counters);
  if (g_or.has_error()) return g_or.error();
  const int64_t n = query.dimensions()[0];
  if (auto err = CheckIndexRange(kOp, n, "keys"); err.failure()) return err;
  auto meta = MetaOutputs(kOp, g_or.value(), keys, last, freq, counters, keys_out, last_out,
                          freq_out, counters_out, stream);
  if (meta.has_error()) return meta.error();
  EraseArgs a;
  a.table = meta.value();
  a.query = query.typed_data();
  a.n = n;
  a.erased = erased->typed_data();
  return LaunchWithScratch(kOp, a, scratch, stream, EraseScratchBytes, Erase);
}

ffi::Error EraseIfImpl(cudaStream_t stream, ffi::BufferR1<ffi::S64> keys,
                       ffi::BufferR1<ffi::S64> last, ffi::BufferR1<ffi::S64> freq,
                       ffi::BufferR1<ffi::S64> counters, ffi::BufferR0<ffi::S64> threshold,
                       ffi::ResultBufferR1<ffi::S64> keys_out,
                       ffi::ResultBufferR1<ffi::S64> last_out,
                       ffi::ResultBufferR1<ffi::S64> freq_out,
                       ffi::ResultBufferR1<ffi::S64> counters_out,
                       ffi::ResultBufferR0<ffi::S64> erased, int64_t bucket_size,
                       int32_t mode, int32_t policy) {
  constexpr const char* kOp = "hypereca_erase_if";
  auto g_or = CheckTableMeta(kOp, bucket_size, keys, last, freq, counters);
  if (g_or.has_error()) return g_or.error();
  if (auto err = CheckModeAndPolicy(kOp, mode, policy); err.failure()) return err;
  auto meta = MetaOutputs(kOp, g_or.value(), keys, last, freq, counters, keys_out, last_out,
                          freq_out, counters_out, stream);
  if (meta.has_error()) return meta.error();
  EraseIfArgs a;
  a.table = meta.value();
  a.threshold = threshold.typed_data();
  a.mode = mode;
  a.policy = policy;
  a.erased = erased->typed_data();
  const LaunchStatus s = EraseIf(a, stream);
  if (!s.ok()) return CudaFailure(kOp, s);
  return ffi::Error::Success();
}

// ---------------------------------------------------------------- export
ffi::Error ExportImpl(cudaStream_t stream, ffi::ScratchAllocator scratch,
                      ffi::BufferR1<ffi::S64> keys, ffi::AnyBuffer values,
                      ffi::BufferR2<ffi::F32> opt, ffi::BufferR1<ffi::S64> last,
                      ffi::BufferR1<ffi::S64> freq, ffi::BufferR0<ffi::S64> cursor,
                      ffi::BufferR0<ffi::S64> threshold, ffi::ResultBufferR1<ffi::S64> out_keys,
                      ffi::Result<ffi::AnyBuffer> out_values,
                      ffi::ResultBufferR2<ffi::F32> out_opt,
                      ffi::ResultBufferR1<ffi::S64> out_last,
                      ffi::ResultBufferR1<ffi::S64> out_freq,
                      ffi::ResultBufferR1<ffi::S64> info, int32_t mode, int32_t policy) {
  constexpr const char* kOp = "hypereca_export";
  auto shape_or = CheckExport(keys, values, opt, last, freq, out_keys, out_values, out_opt,
                              out_last, out_freq, info, mode, policy);
  if (shape_or.has_error()) return shape_or.error();
  const ExportShape shape = shape_or.value();
  const std::optional<ValueType> vt = ValueTypeOf(values.element_type());
  if (!vt) return BadValueType(kOp);
  if (auto err = CheckIndexRange(kOp, shape.capacity, "table rows"); err.failure()) return err;
  if (auto err = CheckIndexRange(kOp, shape.chunk, "exported rows"); err.failure()) return err;
  ExportArgs a;
  a.keys = keys.typed_data();
  a.values = values.untyped_data();
  a.opt = opt.typed_data();
  a.last_step = last.typed_data();
  a.freq = freq.typed_data();
  a.capacity = shape.capacity;
  a.dim = shape.dim;
  a.width = shape.width;
  a.value_type = *vt;
  a.cursor = cursor.typed_data();
  a.threshold = threshold.typed_data();
  a.mode = mode;
  a.policy = policy;
  a.chunk = shape.chunk;
  a.out_keys = out_keys->typed_data();
  a.out_values = out_values->untyped_data();
  a.out_opt = out_opt->typed_data();
  a.out_last = out_last->typed_data();
  a.out_freq = out_freq->typed_data();
  a.info = info->typed_data();
  return LaunchWithScratch(kOp, a, scratch, stream, ExportScratchBytes, Export);
}

// ---------------------------------------------------------------- import_rows
ffi::Error ImportImpl(cudaStream_t stream, ffi::ScratchAllocator scratch,
                      ffi::BufferR1<ffi::S64> keys, ffi::AnyBuffer values,
                      ffi::BufferR2<ffi::F32> opt, ffi::BufferR1<ffi::S64> last,
                      ffi::BufferR1<ffi::S64> freq, ffi::BufferR1<ffi::S64> counters,
                      ffi::BufferR1<ffi::S64> in_keys, ffi::AnyBuffer in_values,
                      ffi::BufferR2<ffi::F32> in_opt, ffi::BufferR1<ffi::S64> in_last,
                      ffi::BufferR1<ffi::S64> in_freq, ffi::ResultBufferR1<ffi::S64> keys_out,
                      ffi::Result<ffi::AnyBuffer> values_out,
                      ffi::ResultBufferR2<ffi::F32> opt_out,
                      ffi::ResultBufferR1<ffi::S64> last_out,
                      ffi::ResultBufferR1<ffi::S64> freq_out,
                      ffi::ResultBufferR1<ffi::S64> counters_out,
                      ffi::ResultBufferR1<ffi::S32> slots, ffi::ResultBufferR1<ffi::S64> status,
                      int64_t bucket_size) {
  constexpr const char* kOp = "hypereca_import_rows";
  auto shape_or = CheckTable(kOp, bucket_size, keys, values, opt, last, freq, counters);
  if (shape_or.has_error()) return shape_or.error();
  const TableShape shape = shape_or.value();
  if (auto err = CheckImport(shape, values, in_keys, in_values, in_opt, in_last, in_freq, slots,
                             status);
      err.failure()) {
    return err;
  }
  const std::optional<ValueType> vt = ValueTypeOf(values.element_type());
  if (!vt) return BadValueType(kOp);
  if (values_out->element_type() != values.element_type()) {
    return InvalidArgument("hypereca_import_rows: value dtypes disagree");
  }
  const int64_t n = in_keys.dimensions()[0];
  if (auto err = CheckIndexRange(kOp, n, "rows"); err.failure()) return err;
  for (const LaunchStatus& s :
       {CopyIfDistinct(values_out->untyped_data(), values.untyped_data(), values.size_bytes(),
                       stream),
        CopyIfDistinct(opt_out->typed_data(), opt.typed_data(), opt.size_bytes(), stream)}) {
    if (!s.ok()) return CudaFailure(kOp, s);
  }
  auto meta = MetaOutputs(kOp, shape.geometry, keys, last, freq, counters, keys_out, last_out,
                          freq_out, counters_out, stream);
  if (meta.has_error()) return meta.error();
  ImportArgs a;
  a.table = meta.value();
  a.values = values_out->untyped_data();
  a.opt = opt_out->typed_data();
  a.dim = shape.dim;
  a.width = shape.state_width;
  a.value_type = *vt;
  a.in_keys = in_keys.typed_data();
  a.in_values = in_values.untyped_data();
  a.in_opt = in_opt.typed_data();
  a.in_last = in_last.typed_data();
  a.in_freq = in_freq.typed_data();
  a.n = n;
  a.slots = slots->typed_data();
  a.status = status->typed_data();
  a.status_len = status->dimensions()[0];
  return LaunchWithScratch(kOp, a, scratch, stream, ImportScratchBytes, Import);
}

// ---------------------------------------------------------------- unique
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

// ---------------------------------------------------------------- bucketize
ffi::Error BucketizeImpl(cudaStream_t stream, ffi::ScratchAllocator scratch,
                         ffi::BufferR1<ffi::S64> keys, ffi::ResultBufferR2<ffi::S64> send,
                         ffi::ResultBufferR1<ffi::S32> counts,
                         ffi::ResultBufferR1<ffi::S32> position) {
  if (auto err = CheckBucketize(keys, send, counts, position); err.failure()) return err;
  BucketizeArgs a;
  a.keys = keys.typed_data();
  a.n = keys.dimensions()[0];
  a.shards = send->dimensions()[0];
  a.cap = send->dimensions()[1];
  a.send = send->typed_data();
  a.counts = counts->typed_data();
  a.position = position->typed_data();
  return LaunchWithScratch("hypereca_bucketize", a, scratch, stream, BucketizeScratchBytes,
                           Bucketize);
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

// clang-format off
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaGatherTaggedCuda, hypereca::cuda::GatherTaggedImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
        .Arg<xla::ffi::BufferR1<xla::ffi::S32>>()  // tags   (n,) table of each row, -1: none
        .Arg<xla::ffi::BufferR1<xla::ffi::S32>>()  // slots  (n,)
        .RemainingArgs()                           // values of each table (C_t, D)
        .Ret<xla::ffi::AnyBuffer>());              // rows   (n, D)

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaApplyGradientsCuda, hypereca::cuda::ApplyGradientsImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
        .Ctx<xla::ffi::ScratchAllocator>()
        .Arg<xla::ffi::AnyBuffer>()                  // values    (C, D)
        .Arg<xla::ffi::BufferR2<xla::ffi::F32>>()    // opt_state (C, K)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()    // counters  (16,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S32>>()    // slots     (n,) -1 ignored
        .Arg<xla::ffi::BufferR2<xla::ffi::F32>>()    // grads     (n, D)
        .Arg<xla::ffi::BufferR1<xla::ffi::F32>>()    // hparams   (8,) see HParam
        .Ret<xla::ffi::AnyBuffer>()                  // values    aliased
        .Ret<xla::ffi::BufferR2<xla::ffi::F32>>()    // opt_state aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()    // counters  aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()    // status    (4,) see ApplyStatus
        .Attr<int32_t>("optimizer"));                // OptimizerKind

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaEraseCuda, hypereca::cuda::EraseImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
        .Ctx<xla::ffi::ScratchAllocator>()
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys      (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // last_step (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // freq      (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // counters  (16,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // query     (n,) keys to erase
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys      aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // last_step aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // freq      aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // counters  aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::PRED>>()  // erased    (n,) key was resident
        .Attr<int64_t>("bucket_size"));             // slots per bucket

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaEraseIfCuda, hypereca::cuda::EraseIfImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys      (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // last_step (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // freq      (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // counters  (16,)
        .Arg<xla::ffi::BufferR0<xla::ffi::S64>>()   // threshold ()
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys      aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // last_step aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // freq      aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // counters  aliased
        .Ret<xla::ffi::BufferR0<xla::ffi::S64>>()   // erased    () rows removed
        .Attr<int64_t>("bucket_size")               // slots per bucket
        .Attr<int32_t>("mode")                      // ExportMode (kAll erases everything)
        .Attr<int32_t>("policy"));                  // ScorePolicy: which score is compared

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaExportCuda, hypereca::cuda::ExportImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
        .Ctx<xla::ffi::ScratchAllocator>()
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys       (C,)
        .Arg<xla::ffi::AnyBuffer>()                 // values     (C, D)
        .Arg<xla::ffi::BufferR2<xla::ffi::F32>>()   // opt_state  (C, K)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // last_step  (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // freq       (C,)
        .Arg<xla::ffi::BufferR0<xla::ffi::S64>>()   // cursor     () first slot to scan
        .Arg<xla::ffi::BufferR0<xla::ffi::S64>>()   // threshold  () for the predicate
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys       (M,) kEmptyKey past count
        .Ret<xla::ffi::AnyBuffer>()                 // values     (M, D)
        .Ret<xla::ffi::BufferR2<xla::ffi::F32>>()   // opt_state  (M, K)
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // last_step  (M,)
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // freq       (M,)
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // info       (2,) count, next cursor
        .Attr<int32_t>("mode")                      // ExportMode
        .Attr<int32_t>("policy"));                  // ScorePolicy: which score is compared

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaImportRowsCuda, hypereca::cuda::ImportImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
        .Ctx<xla::ffi::ScratchAllocator>()
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys       (C,)
        .Arg<xla::ffi::AnyBuffer>()                 // values     (C, D)
        .Arg<xla::ffi::BufferR2<xla::ffi::F32>>()   // opt_state  (C, K)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // last_step  (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // freq       (C,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // counters   (16,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // row keys   (n,) sentinels skipped
        .Arg<xla::ffi::AnyBuffer>()                 // row values (n, D)
        .Arg<xla::ffi::BufferR2<xla::ffi::F32>>()   // row state  (n, K)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // row last_step (n,)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // row freq   (n,)
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys       aliased
        .Ret<xla::ffi::AnyBuffer>()                 // values     aliased
        .Ret<xla::ffi::BufferR2<xla::ffi::F32>>()   // opt_state  aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // last_step  aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // freq       aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // counters   aliased
        .Ret<xla::ffi::BufferR1<xla::ffi::S32>>()   // slots      (n,) -1: sentinel or refused
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // status     (4,) see ImportStatus
        .Attr<int64_t>("bucket_size"));             // slots per bucket

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaUniqueCuda, hypereca::cuda::UniqueImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
        .Ctx<xla::ffi::ScratchAllocator>()
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys    (n,)
        .Ret<xla::ffi::BufferR1<xla::ffi::S64>>()   // unique  (n,) first-occurrence order, kEmptyKey past count
        .Ret<xla::ffi::BufferR1<xla::ffi::S32>>()   // inverse (n,) -1 for padding
        .Ret<xla::ffi::BufferR0<xla::ffi::S32>>()); // count   ()

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaBucketizeCuda, hypereca::cuda::BucketizeImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
        .Ctx<xla::ffi::ScratchAllocator>()
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys     (n,)
        .Ret<xla::ffi::BufferR2<xla::ffi::S64>>()   // send     (W, cap) kEmptyKey padded
        .Ret<xla::ffi::BufferR1<xla::ffi::S32>>()   // counts   (W,) true counts, may exceed cap
        .Ret<xla::ffi::BufferR1<xla::ffi::S32>>()); // position (n,) d*cap+j, -1: padding/overflow
// clang-format on

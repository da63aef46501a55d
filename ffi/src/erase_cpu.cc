// erase on CPU: by key list, or every row whose score passes a predicate
// (TTL-style cleanup). Erased rows are counted in the table's counters.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu_util.h"
#include "hypereca/common.h"
#include "hypereca/erase.h"
#include "hypereca/probe.h"
#include "table_args.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca::cpu {
namespace {

ffi::Error EraseImpl(ffi::BufferR1<ffi::S64> keys, ffi::BufferR1<ffi::S64> last,
                     ffi::BufferR1<ffi::S64> freq, ffi::BufferR1<ffi::S64> counters,
                     ffi::BufferR1<ffi::S64> query, ffi::ResultBufferR1<ffi::S64> keys_out,
                     ffi::ResultBufferR1<ffi::S64> last_out,
                     ffi::ResultBufferR1<ffi::S64> freq_out,
                     ffi::ResultBufferR1<ffi::S64> counters_out,
                     ffi::ResultBufferR1<ffi::PRED> erased, int64_t bucket_size) {
  auto g_or = CheckTableMeta("hypereca_erase", bucket_size, keys, last, freq, counters);
  if (g_or.has_error()) return g_or.error();
  const TableGeometry g = g_or.value();
  const int64_t n = query.dimensions()[0];
  AliasOutputs(keys_out, keys, last_out, last, freq_out, freq, counters_out, counters);
  int64_t* k = keys_out->typed_data();
  int64_t* ls = last_out->typed_data();
  int64_t* fq = freq_out->typed_data();
  const int64_t* q = query.typed_data();
  bool* out = erased->typed_data();
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = IsReserved(q[i]) ? -1 : FindSlot(k, g, q[i]);
    out[i] = s >= 0;
    if (s < 0) continue;
    FreeSlot(k, ls, fq, g, s);
    ++count;
  }
  counters_out->typed_data()[kSize] -= count;
  counters_out->typed_data()[kErased] += count;
  return ffi::Error::Success();
}

ffi::Error EraseIfImpl(ffi::ThreadPool pool, ffi::BufferR1<ffi::S64> keys,
                       ffi::BufferR1<ffi::S64> last, ffi::BufferR1<ffi::S64> freq,
                       ffi::BufferR1<ffi::S64> counters, ffi::BufferR0<ffi::S64> threshold,
                       ffi::ResultBufferR1<ffi::S64> keys_out,
                       ffi::ResultBufferR1<ffi::S64> last_out,
                       ffi::ResultBufferR1<ffi::S64> freq_out,
                       ffi::ResultBufferR1<ffi::S64> counters_out,
                       ffi::ResultBufferR0<ffi::S64> erased, int64_t bucket_size,
                       int32_t mode, int32_t policy) {
  auto g_or = CheckTableMeta("hypereca_erase_if", bucket_size, keys, last, freq, counters);
  if (g_or.has_error()) return g_or.error();
  const TableGeometry g = g_or.value();
  if (auto err = CheckModeAndPolicy("hypereca_erase_if", mode, policy); err.failure()) {
    return err;
  }
  AliasOutputs(keys_out, keys, last_out, last, freq_out, freq, counters_out, counters);
  int64_t* k = keys_out->typed_data();
  int64_t* ls = last_out->typed_data();
  int64_t* fq = freq_out->typed_data();
  const int64_t thr = *threshold.typed_data();
  const auto m = static_cast<ExportMode>(mode);
  const auto p = static_cast<ScorePolicy>(policy);
  // Buckets are independent: split them over tasks.
  const int64_t nb = static_cast<int64_t>(g.num_buckets);
  const int64_t tasks = NumTasks(pool, g.capacity, 1 << 16);
  std::vector<int64_t> counts(tasks, 0);
  ParallelFor(pool, tasks, [&](int64_t t) {
    int64_t b0, b1;
    TaskRange(nb, tasks, t, &b0, &b1);
    for (int64_t s = b0 * g.bucket_size; s < b1 * g.bucket_size; ++s) {
      if (IsReserved(k[s]) || !Selected(m, ScoreOf(p, ls[s], fq[s]), thr)) continue;
      FreeSlot(k, ls, fq, g, s);
      counts[t]++;
    }
  });
  int64_t count = 0;
  for (int64_t c : counts) count += c;
  counters_out->typed_data()[kSize] -= count;
  counters_out->typed_data()[kErased] += count;
  *erased->typed_data() = count;
  return ffi::Error::Success();
}

}  // namespace
}  // namespace hypereca::cpu

// clang-format off
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaEraseCpu, hypereca::cpu::EraseImpl,
    xla::ffi::Ffi::Bind()
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
    HyperecaEraseIfCpu, hypereca::cpu::EraseIfImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::ThreadPool>()
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
// clang-format on

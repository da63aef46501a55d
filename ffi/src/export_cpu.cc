// export on CPU: copies resident rows (keys, values, optimizer state, scores)
// out in slot order, one chunk per call, optionally only rows whose score
// passes a predicate. The caller loops on next_cursor until it equals the
// capacity: checkpoints, tier moves and re-sharding are built on this.
#include <algorithm>
#include <cstdint>

#include "cpu_util.h"
#include "hypereca/common.h"
#include "hypereca/erase.h"
#include "table_args.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca::cpu {
namespace {

ffi::Error ExportImpl(ffi::BufferR1<ffi::S64> keys, ffi::AnyBuffer values,
                      ffi::BufferR2<ffi::F32> opt, ffi::BufferR1<ffi::S64> last,
                      ffi::BufferR1<ffi::S64> freq, ffi::BufferR0<ffi::S64> cursor,
                      ffi::BufferR0<ffi::S64> threshold,
                      ffi::ResultBufferR1<ffi::S64> out_keys,
                      ffi::Result<ffi::AnyBuffer> out_values,
                      ffi::ResultBufferR2<ffi::F32> out_opt,
                      ffi::ResultBufferR1<ffi::S64> out_last,
                      ffi::ResultBufferR1<ffi::S64> out_freq,
                      ffi::ResultBufferR1<ffi::S64> info, int32_t mode, int32_t policy) {
  auto shape_or = CheckExport(keys, values, opt, last, freq, out_keys, out_values, out_opt,
                              out_last, out_freq, info, mode, policy);
  if (shape_or.has_error()) return shape_or.error();
  const int64_t capacity = shape_or->capacity, dim = shape_or->dim, width = shape_or->width;
  const int64_t chunk = shape_or->chunk;
  const auto m = static_cast<ExportMode>(mode);
  const auto p = static_cast<ScorePolicy>(policy);
  const int64_t thr = *threshold.typed_data();
  return DispatchValueType(values.element_type(), "hypereca_export", [&](auto tag) {
    using T = decltype(tag);
    const int64_t* k = keys.typed_data();
    const T* v = reinterpret_cast<const T*>(values.untyped_data());
    const float* o = opt.typed_data();
    T* ov = reinterpret_cast<T*>(out_values->untyped_data());
    int64_t count = 0;
    int64_t s = std::clamp<int64_t>(*cursor.typed_data(), 0, capacity);
    for (; s < capacity && count < chunk; ++s) {
      if (IsReserved(k[s])) continue;
      if (!Selected(m, ScoreOf(p, last.typed_data()[s], freq.typed_data()[s]), thr)) continue;
      out_keys->typed_data()[count] = k[s];
      out_last->typed_data()[count] = last.typed_data()[s];
      out_freq->typed_data()[count] = freq.typed_data()[s];
      std::copy_n(v + s * dim, dim, ov + count * dim);
      std::copy_n(o + s * width, width, out_opt->typed_data() + count * width);
      ++count;
    }
    std::fill(out_keys->typed_data() + count, out_keys->typed_data() + chunk, kEmptyKey);
    std::fill(out_last->typed_data() + count, out_last->typed_data() + chunk, 0);
    std::fill(out_freq->typed_data() + count, out_freq->typed_data() + chunk, 0);
    std::fill(ov + count * dim, ov + chunk * dim, FromF32<T>(0.f));
    std::fill(out_opt->typed_data() + count * width, out_opt->typed_data() + chunk * width,
              0.f);
    info->typed_data()[0] = count;
    info->typed_data()[1] = s;
    return ffi::Error::Success();
  });
}

}  // namespace
}  // namespace hypereca::cpu

// clang-format off
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaExportCpu, hypereca::cpu::ExportImpl,
    xla::ffi::Ffi::Bind()
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
// clang-format on

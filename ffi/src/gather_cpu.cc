// gather on CPU: rows of given slots (slot -1 or out of range -> zeros).
#include <algorithm>
#include <cstdint>

#include "cpu_util.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca::cpu {
namespace {

ffi::Error GatherImpl(ffi::ThreadPool pool, ffi::AnyBuffer values,
                      ffi::BufferR1<ffi::S32> slots, ffi::Result<ffi::AnyBuffer> rows) {
  auto vd = values.dimensions();
  const int64_t n = slots.dimensions()[0];
  if (vd.size() != 2 || rows->dimensions().size() != 2 || rows->dimensions()[0] != n ||
      rows->dimensions()[1] != vd[1] || rows->element_type() != values.element_type()) {
    return InvalidArgument("hypereca_gather: rows must be (n, dim) of the table's dtype");
  }
  const int64_t capacity = vd[0], dim = vd[1];
  return DispatchValueType(values.element_type(), "hypereca_gather", [&](auto tag) {
    using T = decltype(tag);
    const T* v = reinterpret_cast<const T*>(values.untyped_data());
    T* out = reinterpret_cast<T*>(rows->untyped_data());
    const int32_t* s = slots.typed_data();
    const int64_t tasks = NumTasks(pool, n * dim, 1 << 16);
    ParallelFor(pool, tasks, [&](int64_t t) {
      int64_t b, e;
      TaskRange(n, tasks, t, &b, &e);
      constexpr int64_t kAhead = 8;
      for (int64_t i = b; i < std::min(e, b + kAhead); ++i) {
        if (s[i] >= 0 && s[i] < capacity) Prefetch(v + s[i] * dim, dim * sizeof(T));
      }
      for (int64_t i = b; i < e; ++i) {
        const int64_t ahead = i + kAhead;
        if (ahead < e && s[ahead] >= 0 && s[ahead] < capacity) {
          Prefetch(v + s[ahead] * dim, dim * sizeof(T));
        }
        const int64_t slot = s[i];
        if (slot >= 0 && slot < capacity) {
          std::copy_n(v + slot * dim, dim, out + i * dim);
        } else {
          std::fill_n(out + i * dim, dim, FromF32<T>(0.f));
        }
      }
    });
    return ffi::Error::Success();
  });
}

}  // namespace
}  // namespace hypereca::cpu

// clang-format off
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaGatherCpu, hypereca::cpu::GatherImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::ThreadPool>()
        .Arg<xla::ffi::AnyBuffer>()                // values (C, D)
        .Arg<xla::ffi::BufferR1<xla::ffi::S32>>()  // slots  (n,)
        .Ret<xla::ffi::AnyBuffer>());              // rows   (n, D)
// clang-format on

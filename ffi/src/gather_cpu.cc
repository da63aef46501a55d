// gather on CPU: rows of given slots (slot -1 or out of range -> zeros), from
// one table or, tagged, from several. gather also counts the slots outside
// [-1, capacity) (a caller's misuse, never a padding slot) so the Python layer
// can raise with the numbers instead of handing back silent zero rows.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu_util.h"
#include "table_args.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca::cpu {
namespace {

ffi::Error GatherImpl(ffi::ThreadPool pool, ffi::AnyBuffer values,
                      ffi::BufferR1<ffi::S32> slots, ffi::Result<ffi::AnyBuffer> rows,
                      ffi::ResultBufferR0<ffi::S64> bad_slots) {
  auto vd = values.dimensions();
  const int64_t n = slots.dimensions()[0];
  if (vd.size() != 2 || rows->dimensions().size() != 2 || rows->dimensions()[0] != n ||
      rows->dimensions()[1] != vd[1] || rows->element_type() != values.element_type()) {
    return InvalidArgument("hypereca_gather: rows must be (n, dim) of the table's dtype");
  }
  const int64_t capacity = vd[0], dim = vd[1];
  const int32_t* s = slots.typed_data();
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) bad += s[i] != -1 && (s[i] < 0 || s[i] >= capacity);
  *bad_slots->typed_data() = bad;
  return DispatchValueType(values.element_type(), "hypereca_gather", [&](auto tag) {
    using T = decltype(tag);
    const T* v = reinterpret_cast<const T*>(values.untyped_data());
    T* out = reinterpret_cast<T*>(rows->untyped_data());
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

// Rows of several tables of one dim and dtype: row i comes from table tags[i]
// at slots[i] (tag or slot -1, or out of range -> zeros). The exchange of a
// group of tables gathers all of them into one buffer with it.
ffi::Error GatherTaggedImpl(ffi::ThreadPool pool, ffi::BufferR1<ffi::S32> tags,
                            ffi::BufferR1<ffi::S32> slots, ffi::RemainingArgs tables,
                            ffi::Result<ffi::AnyBuffer> rows) {
  std::vector<const void*> base;
  std::vector<int64_t> capacity;
  if (auto err = CheckGatherTagged(tags, slots, tables, rows, &base, &capacity);
      err.failure()) {
    return err;
  }
  const int64_t n = slots.dimensions()[0];
  const int64_t num_tables = static_cast<int64_t>(base.size());
  const int64_t dim = rows->dimensions()[1];
  return DispatchValueType(rows->element_type(), "hypereca_gather_tagged", [&](auto tag) {
    using T = decltype(tag);
    T* out = reinterpret_cast<T*>(rows->untyped_data());
    const int32_t* tg = tags.typed_data();
    const int32_t* sl = slots.typed_data();
    const int64_t tasks = NumTasks(pool, n * dim, 1 << 16);
    ParallelFor(pool, tasks, [&](int64_t t) {
      int64_t b, e;
      TaskRange(n, tasks, t, &b, &e);
      for (int64_t i = b; i < e; ++i) {
        const int64_t table = tg[i], slot = sl[i];
        if (table >= 0 && table < num_tables && slot >= 0 && slot < capacity[table]) {
          std::copy_n(static_cast<const T*>(base[table]) + slot * dim, dim, out + i * dim);
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
        .Arg<xla::ffi::BufferR1<xla::ffi::S32>>()  // slots  (n,) -1: no row (zeros)
        .Ret<xla::ffi::AnyBuffer>()                // rows   (n, D)
        .Ret<xla::ffi::BufferR0<xla::ffi::S64>>());  // bad_slots () outside [-1, C): zeros
// clang-format on

// clang-format off
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    HyperecaGatherTaggedCpu, hypereca::cpu::GatherTaggedImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::ThreadPool>()
        .Arg<xla::ffi::BufferR1<xla::ffi::S32>>()  // tags   (n,) table of each row, -1: none
        .Arg<xla::ffi::BufferR1<xla::ffi::S32>>()  // slots  (n,)
        .RemainingArgs()                           // values of each table (C_t, D)
        .Ret<xla::ffi::AnyBuffer>());              // rows   (n, D)
// clang-format on

// find on CPU: rows of resident keys without inserting anything (evaluation,
// serving). Misses are reported in `found` and get zeros, or the row a later
// insert would create when miss_init is set.
#include <algorithm>
#include <cstdint>

#include "cpu_util.h"
#include "hypereca/common.h"
#include "hypereca/init.h"
#include "hypereca/probe.h"
#include "table_args.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca::cpu {
namespace {

ffi::Error FindImpl(ffi::ThreadPool pool, ffi::BufferR1<ffi::S64> keys,
                    ffi::AnyBuffer values, ffi::BufferR1<ffi::S64> query,
                    ffi::Result<ffi::AnyBuffer> rows, ffi::ResultBufferR1<ffi::S32> slots,
                    ffi::ResultBufferR1<ffi::PRED> found, int64_t seed, int32_t init_kind,
                    float init_scale, int64_t bucket_size, bool miss_init) {
  constexpr const char* kOp = "hypereca_find";
  bool want_rows = true;
  auto g_or = CheckFind(keys, values, query, rows, bucket_size, init_kind, &want_rows);
  if (g_or.has_error()) return g_or.error();
  const TableGeometry g = g_or.value();
  const int64_t n = query.dimensions()[0];
  auto vd = values.dimensions();
  const int64_t dim = vd[1];
  return DispatchValueType(values.element_type(), kOp, [&](auto tag) {
    using T = decltype(tag);
    const int64_t* k = keys.typed_data();
    const int64_t* qk = query.typed_data();
    const T* v = reinterpret_cast<const T*>(values.untyped_data());
    T* out = reinterpret_cast<T*>(rows->untyped_data());
    int32_t* sl = slots->typed_data();
    bool* fd = found->typed_data();
    const int64_t tasks = NumTasks(pool, n, 1 << 12);
    ParallelFor(pool, tasks, [&](int64_t t) {
      int64_t b, e;
      TaskRange(n, tasks, t, &b, &e);
      // Groups of keys: prefetch every probe start of the group, then probe,
      // so the cache misses of a group overlap.
      constexpr int64_t kGroup = 16;
      for (int64_t i0 = b; i0 < e; i0 += kGroup) {
        const int64_t i1 = std::min(e, i0 + kGroup);
        for (int64_t i = i0; i < i1; ++i) PrefetchProbe(k, g, qk[i]);
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t s = IsReserved(qk[i]) ? -1 : FindSlot(k, g, qk[i]);
          sl[i] = static_cast<int32_t>(s);
          fd[i] = s >= 0;
          if (want_rows && s >= 0) Prefetch(v + s * dim, dim * sizeof(T));
        }
        if (!want_rows) continue;
        for (int64_t i = i0; i < i1; ++i) {
        const int64_t key = qk[i];
        const int64_t s = sl[i];
        T* dst = out + i * dim;
        if (s >= 0) {
          std::copy_n(v + s * dim, dim, dst);
        } else if (miss_init && !IsReserved(key)) {
          const uint64_t row_seed = RowSeed(static_cast<uint64_t>(seed), key);
          for (int64_t c = 0; c < dim; ++c) {
            dst[c] = FromF32<T>(InitValue(row_seed, static_cast<uint32_t>(c),
                                          static_cast<InitKind>(init_kind), init_scale));
          }
        } else {
          std::fill_n(dst, dim, FromF32<T>(0.f));
        }
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
    HyperecaFindCpu, hypereca::cpu::FindImpl,
    xla::ffi::Ffi::Bind()
        .Ctx<xla::ffi::ThreadPool>()
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // keys    (C,)
        .Arg<xla::ffi::AnyBuffer>()                 // values  (C, D)
        .Arg<xla::ffi::BufferR1<xla::ffi::S64>>()   // query   (n,)
        .Ret<xla::ffi::AnyBuffer>()                 // rows    (n, D), or (0, D): slots only
        .Ret<xla::ffi::BufferR1<xla::ffi::S32>>()   // slots   (n,) -1 on a miss
        .Ret<xla::ffi::BufferR1<xla::ffi::PRED>>()  // found   (n,)
        .Attr<int64_t>("seed")                      // table seed (miss_init)
        .Attr<int32_t>("init_kind")                 // InitKind (miss_init)
        .Attr<float>("init_scale")                  // initializer scale (miss_init)
        .Attr<int64_t>("bucket_size")               // slots per bucket
        .Attr<bool>("miss_init"));                  // misses get their would-be initial row
// clang-format on

// find on CPU: rows of resident keys without inserting anything (evaluation,
// serving). Misses are reported in `found` and get zeros, or the row a later
// insert would create when miss_init is set.
#include <algorithm>
#include <cstdint>

#include "cpu_util.h"
#include "hypereca/common.h"
#include "hypereca/init.h"
#include "hypereca/probe.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca::cpu {
namespace {

ffi::Error FindImpl(ffi::ThreadPool pool, ffi::BufferR1<ffi::S64> keys,
                    ffi::AnyBuffer values, ffi::BufferR1<ffi::S64> query,
                    ffi::Result<ffi::AnyBuffer> rows, ffi::ResultBufferR1<ffi::S32> slots,
                    ffi::ResultBufferR1<ffi::PRED> found, int64_t seed, int32_t init_kind,
                    float init_scale, int64_t bucket_size, bool miss_init) {
  constexpr const char* kOp = "hypereca_find";
  TableGeometry g;
  g.capacity = keys.dimensions()[0];
  g.bucket_size = static_cast<uint32_t>(bucket_size);
  g.num_buckets = bucket_size > 0 ? static_cast<uint64_t>(g.capacity / bucket_size) : 0;
  if (bucket_size <= 0 || !g.Valid()) {
    return InvalidArgument("hypereca_find: bucket_size must be a power of two dividing capacity");
  }
  auto vd = values.dimensions();
  const int64_t n = query.dimensions()[0];
  // rows (0, dim) asks for slots and found only.
  const bool want_rows = rows->dimensions().size() == 2 && rows->dimensions()[0] != 0;
  if (vd.size() != 2 || vd[0] != g.capacity || rows->dimensions().size() != 2 ||
      (want_rows && rows->dimensions()[0] != n) || rows->dimensions()[1] != vd[1] ||
      rows->element_type() != values.element_type()) {
    return InvalidArgument("hypereca_find: rows must be (n, dim) or (0, dim) of the table's dtype");
  }
  if (init_kind < 0 || init_kind > 2) return InvalidArgument("hypereca_find: bad init_kind");
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

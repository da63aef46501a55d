// Validation of operands shared by every table op, on CPU and CUDA alike (one
// set of checks and messages for both platforms).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "hypereca/common.h"
#include "hypereca/enums.h"
#include "hypereca/optim.h"
#include "hypereca/probe.h"
#include "xla/ffi/api/ffi.h"

namespace hypereca {

namespace ffi = xla::ffi;

// Shapes of one table shard, checked once per call.
struct TableShape {
  TableGeometry geometry;
  int64_t dim;          // columns of values
  int64_t state_width;  // columns of optimizer state
};

inline std::string ShapeError(const char* op, const std::string& what) {
  return std::string(op) + ": " + what;
}

inline ffi::Error BadShape(const char* op, const std::string& what) {
  return ffi::Error::InvalidArgument(ShapeError(op, what));
}

// An int32 selector attribute (enums.h) outside [0, count): the error names the
// op, the attribute, the value and every valid value with its name, e.g.
// "hypereca_find_or_insert: attribute policy = 7 is not one of 0 (lru), 1 (lfu)".
template <size_t N>
inline ffi::Error CheckEnumAttr(const char* op, const char* attr, int32_t value,
                                bool valid, const char* const (&names)[N]) {
  if (valid) return ffi::Error::Success();
  std::string what = std::string("attribute ") + attr + " = " + std::to_string(value) +
                     " is not one of ";
  for (size_t i = 0; i < N; ++i) {
    if (i > 0) what += ", ";
    what += std::to_string(i) + " (" + names[i] + ")";
  }
  return BadShape(op, what);
}

// Geometry of a shard of `capacity` slots in buckets of `bucket_size`.
inline ffi::ErrorOr<TableGeometry> GeometryOf(const char* op, int64_t capacity,
                                              int64_t bucket_size) {
  TableGeometry g;
  g.capacity = capacity;
  g.bucket_size = static_cast<uint32_t>(bucket_size);
  g.num_buckets = bucket_size > 0 ? static_cast<uint64_t>(capacity / bucket_size) : 0;
  if (bucket_size <= 0 || bucket_size > (int64_t{1} << 16) || !g.Valid()) {
    return ffi::Unexpected(BadShape(
        op, "bucket_size must be a power of two <= 65536 dividing the capacity " +
                std::to_string(capacity) + " (got " + std::to_string(bucket_size) + ")"));
  }
  return g;
}

// keys (C), values (C, D), opt (C, K), last_step (C), freq (C), counters (>=16).
inline ffi::ErrorOr<TableShape> CheckTable(const char* op, int64_t bucket_size,
                                           ffi::BufferR1<ffi::S64> keys,
                                           ffi::AnyBuffer values,
                                           ffi::BufferR2<ffi::F32> opt,
                                           ffi::BufferR1<ffi::S64> last_step,
                                           ffi::BufferR1<ffi::S64> freq,
                                           ffi::BufferR1<ffi::S64> counters) {
  const int64_t capacity = keys.dimensions()[0];
  auto vdims = values.dimensions();
  if (vdims.size() != 2 || vdims[0] != capacity) {
    return ffi::Unexpected(
        ffi::Error::InvalidArgument(ShapeError(op, "values must be (capacity, dim)")));
  }
  if (opt.dimensions()[0] != capacity || last_step.dimensions()[0] != capacity ||
      freq.dimensions()[0] != capacity) {
    return ffi::Unexpected(ffi::Error::InvalidArgument(
        ShapeError(op, "opt_state, last_step and freq must have capacity rows")));
  }
  if (counters.dimensions()[0] < kNumCounters) {
    return ffi::Unexpected(ffi::Error::InvalidArgument(
        ShapeError(op, "counters must have at least 16 entries")));
  }
  auto geometry = GeometryOf(op, capacity, bucket_size);
  if (geometry.has_error()) return ffi::Unexpected(geometry.error());
  TableShape shape;
  shape.geometry = geometry.value();
  shape.dim = vdims[1];
  shape.state_width = opt.dimensions()[1];
  return shape;
}

// find_or_insert's per-call operands and results against the table's shape.
inline ffi::Error CheckFindOrInsert(
    const TableShape& shape, ffi::AnyBuffer values, ffi::BufferR1<ffi::S64> query,
    ffi::BufferR1<ffi::F32> opt_init, ffi::Result<ffi::AnyBuffer> values_out,
    ffi::ResultBufferR1<ffi::S32> slots, ffi::ResultBufferR1<ffi::PRED> found,
    ffi::ResultBufferR1<ffi::S64> ev_keys, ffi::Result<ffi::AnyBuffer> ev_values,
    ffi::ResultBufferR2<ffi::F32> ev_opt, ffi::ResultBufferR1<ffi::S64> ev_last,
    ffi::ResultBufferR1<ffi::S64> ev_freq, ffi::ResultBufferR1<ffi::S64> status,
    int32_t init_kind, int32_t policy) {
  constexpr const char* kOp = "hypereca_find_or_insert";
  const int64_t n = query.dimensions()[0];
  const int64_t e = ev_keys->dimensions()[0];
  if (slots->dimensions()[0] != n || found->dimensions()[0] != n) {
    return BadShape(kOp, "slots/found must have one entry per query");
  }
  if (opt_init.dimensions()[0] != shape.state_width) {
    return BadShape(kOp, "opt_init must have state_width entries");
  }
  auto evd = ev_values->dimensions();
  if (evd.size() != 2 || evd[0] != e || evd[1] != shape.dim || ev_opt->dimensions()[0] != e ||
      ev_opt->dimensions()[1] != shape.state_width || ev_last->dimensions()[0] != e ||
      ev_freq->dimensions()[0] != e) {
    return BadShape(kOp, "eviction outputs disagree in shape");
  }
  if (status->dimensions()[0] < kNumInsertStatus) {
    return BadShape(kOp, "status must have 8 entries");
  }
  if (shape.geometry.capacity > (int64_t{1} << 31) - 1) {
    return BadShape(kOp, "a shard holds at most 2^31-1 rows");
  }
  if (auto err = CheckEnumAttr(kOp, "init_kind", init_kind, IsValidInitKind(init_kind),
                               kInitKindNames);
      err.failure()) {
    return err;
  }
  if (auto err = CheckEnumAttr(kOp, "policy", policy, IsValidScorePolicy(policy),
                               kScorePolicyNames);
      err.failure()) {
    return err;
  }
  if (values.element_type() != values_out->element_type() ||
      values.element_type() != ev_values->element_type()) {
    return BadShape(kOp, "value dtypes disagree");
  }
  return ffi::Error::Success();
}

// find's operands; `want_rows` is false for rows of shape (0, dim).
inline ffi::ErrorOr<TableGeometry> CheckFind(ffi::BufferR1<ffi::S64> keys,
                                             ffi::AnyBuffer values,
                                             ffi::BufferR1<ffi::S64> query,
                                             ffi::Result<ffi::AnyBuffer> rows,
                                             int64_t bucket_size, int32_t init_kind,
                                             bool* want_rows) {
  constexpr const char* kOp = "hypereca_find";
  auto g = GeometryOf(kOp, keys.dimensions()[0], bucket_size);
  if (g.has_error()) return g;
  auto vd = values.dimensions();
  auto rd = rows->dimensions();
  *want_rows = rd.size() == 2 && rd[0] != 0;
  if (vd.size() != 2 || vd[0] != g->capacity || rd.size() != 2 ||
      (*want_rows && rd[0] != query.dimensions()[0]) || rd[1] != vd[1] ||
      rows->element_type() != values.element_type()) {
    return ffi::Unexpected(BadShape(kOp, "rows must be (n, dim) or (0, dim) of the table's dtype"));
  }
  if (auto err = CheckEnumAttr(kOp, "init_kind", init_kind, IsValidInitKind(init_kind),
                               kInitKindNames);
      err.failure()) {
    return ffi::Unexpected(err);
  }
  return g;
}

// Table arrays without values: keys (C), last_step (C), freq (C), counters.
inline ffi::ErrorOr<TableGeometry> CheckTableMeta(const char* op, int64_t bucket_size,
                                                  ffi::BufferR1<ffi::S64> keys,
                                                  ffi::BufferR1<ffi::S64> last,
                                                  ffi::BufferR1<ffi::S64> freq,
                                                  ffi::BufferR1<ffi::S64> counters) {
  auto g = GeometryOf(op, keys.dimensions()[0], bucket_size);
  if (g.has_error()) return g;
  if (last.dimensions()[0] != g->capacity || freq.dimensions()[0] != g->capacity ||
      counters.dimensions()[0] < kNumCounters) {
    return ffi::Unexpected(BadShape(op, "table metadata shapes disagree"));
  }
  return g;
}

inline ffi::Error CheckModeAndPolicy(const char* op, int32_t mode, int32_t policy) {
  if (auto err = CheckEnumAttr(op, "mode", mode, IsValidExportMode(mode), kExportModeNames);
      err.failure()) {
    return err;
  }
  return CheckEnumAttr(op, "policy", policy, IsValidScorePolicy(policy), kScorePolicyNames);
}

// apply_gradients: values (C, D), opt (C, StateWidth), grads (n, D) for n
// slots, 8 hparams, counters and status long enough.
struct ApplyShape {
  int64_t capacity;
  int64_t dim;
  int64_t width;
  OptimizerKind kind;
};

inline ffi::ErrorOr<ApplyShape> CheckApplyGradients(
    ffi::AnyBuffer values, ffi::BufferR2<ffi::F32> opt, ffi::BufferR1<ffi::S64> counters,
    ffi::BufferR1<ffi::S32> slots, ffi::BufferR2<ffi::F32> grads,
    ffi::BufferR1<ffi::F32> hparams, ffi::Result<ffi::AnyBuffer> values_out,
    ffi::ResultBufferR1<ffi::S64> status, int32_t optimizer) {
  constexpr const char* kOp = "hypereca_apply_gradients";
  auto vd = values.dimensions();
  if (vd.size() != 2) return ffi::Unexpected(BadShape(kOp, "values must be 2-D"));
  ApplyShape a;
  a.capacity = vd[0];
  a.dim = vd[1];
  const int64_t n = slots.dimensions()[0];
  if (auto err = CheckEnumAttr(kOp, "optimizer", optimizer, IsValidOptimizer(optimizer),
                               kOptimizerKindNames);
      err.failure()) {
    return ffi::Unexpected(err);
  }
  a.kind = static_cast<OptimizerKind>(optimizer);
  a.width = opt.dimensions()[1];
  if (opt.dimensions()[0] != a.capacity || a.width != StateWidth(a.kind, a.dim)) {
    return ffi::Unexpected(BadShape(
        kOp, "opt_state must be (capacity, " + std::to_string(StateWidth(a.kind, a.dim)) +
                 ") for this optimizer"));
  }
  if (grads.dimensions()[0] != n || grads.dimensions()[1] != a.dim) {
    return ffi::Unexpected(BadShape(kOp, "grads must be (n, dim) for n slots"));
  }
  if (hparams.dimensions()[0] < kNumHParams) {
    return ffi::Unexpected(BadShape(kOp, "hparams must have 8 entries"));
  }
  if (counters.dimensions()[0] < kNumCounters || status->dimensions()[0] < kNumApplyStatus) {
    return ffi::Unexpected(BadShape(kOp, "counters/status too short"));
  }
  if (values_out->element_type() != values.element_type()) {
    return ffi::Unexpected(BadShape(kOp, "value dtypes disagree"));
  }
  return a;
}

// export: a chunk of M rows out of a table shard.
struct ExportShape {
  int64_t capacity;
  int64_t dim;
  int64_t width;
  int64_t chunk;
};

inline ffi::ErrorOr<ExportShape> CheckExport(
    ffi::BufferR1<ffi::S64> keys, ffi::AnyBuffer values, ffi::BufferR2<ffi::F32> opt,
    ffi::BufferR1<ffi::S64> last, ffi::BufferR1<ffi::S64> freq,
    ffi::ResultBufferR1<ffi::S64> out_keys, ffi::Result<ffi::AnyBuffer> out_values,
    ffi::ResultBufferR2<ffi::F32> out_opt, ffi::ResultBufferR1<ffi::S64> out_last,
    ffi::ResultBufferR1<ffi::S64> out_freq, ffi::ResultBufferR1<ffi::S64> info, int32_t mode,
    int32_t policy) {
  constexpr const char* kOp = "hypereca_export";
  ExportShape e;
  e.capacity = keys.dimensions()[0];
  auto vd = values.dimensions();
  e.chunk = out_keys->dimensions()[0];
  if (vd.size() != 2 || vd[0] != e.capacity || opt.dimensions()[0] != e.capacity ||
      last.dimensions()[0] != e.capacity || freq.dimensions()[0] != e.capacity) {
    return ffi::Unexpected(BadShape(kOp, "table shapes disagree"));
  }
  e.dim = vd[1];
  e.width = opt.dimensions()[1];
  if (out_values->dimensions().size() != 2 || out_values->dimensions()[0] != e.chunk ||
      out_values->dimensions()[1] != e.dim ||
      out_values->element_type() != values.element_type() ||
      out_opt->dimensions()[0] != e.chunk || out_opt->dimensions()[1] != e.width ||
      out_last->dimensions()[0] != e.chunk || out_freq->dimensions()[0] != e.chunk ||
      info->dimensions()[0] < 2) {
    return ffi::Unexpected(BadShape(kOp, "output shapes disagree with the chunk size"));
  }
  if (auto err = CheckModeAndPolicy(kOp, mode, policy); err.failure()) {
    return ffi::Unexpected(err);
  }
  return e;
}

// import_rows: n rows of the table's dim, state width and dtype.
inline ffi::Error CheckImport(const TableShape& shape, ffi::AnyBuffer values,
                              ffi::BufferR1<ffi::S64> in_keys, ffi::AnyBuffer in_values,
                              ffi::BufferR2<ffi::F32> in_opt, ffi::BufferR1<ffi::S64> in_last,
                              ffi::BufferR1<ffi::S64> in_freq,
                              ffi::ResultBufferR1<ffi::S32> slots,
                              ffi::ResultBufferR1<ffi::S64> status) {
  const int64_t n = in_keys.dimensions()[0];
  auto ivd = in_values.dimensions();
  if (ivd.size() != 2 || ivd[0] != n || ivd[1] != shape.dim ||
      in_values.element_type() != values.element_type() || in_opt.dimensions()[0] != n ||
      in_opt.dimensions()[1] != shape.state_width || in_last.dimensions()[0] != n ||
      in_freq.dimensions()[0] != n || slots->dimensions()[0] != n ||
      status->dimensions()[0] < kNumImportStatus) {
    return BadShape("hypereca_import_rows",
                    "rows must match the table's dim, state width and dtype");
  }
  return ffi::Error::Success();
}

inline ffi::Error CheckUnique(ffi::BufferR1<ffi::S64> keys, ffi::ResultBufferR1<ffi::S64> uniq,
                              ffi::ResultBufferR1<ffi::S32> inverse) {
  constexpr const char* kOp = "hypereca_unique";
  const int64_t n = keys.dimensions()[0];
  if (uniq->dimensions()[0] != n || inverse->dimensions()[0] != n) {
    return BadShape(kOp, "outputs must have one entry per key");
  }
  if (n >= (int64_t{1} << 31)) return BadShape(kOp, "at most 2^31-1 keys");
  return ffi::Error::Success();
}

inline ffi::Error CheckBucketize(ffi::BufferR1<ffi::S64> keys,
                                 ffi::ResultBufferR2<ffi::S64> send,
                                 ffi::ResultBufferR1<ffi::S32> counts,
                                 ffi::ResultBufferR1<ffi::S32> position) {
  constexpr const char* kOp = "hypereca_bucketize";
  const int64_t n = keys.dimensions()[0];
  const int64_t shards = send->dimensions()[0], cap = send->dimensions()[1];
  if (shards <= 0 || counts->dimensions()[0] != shards || position->dimensions()[0] != n) {
    return BadShape(kOp, "send (W, cap), counts (W,), position (n,)");
  }
  if (shards * cap >= (int64_t{1} << 31)) return BadShape(kOp, "W * cap must be < 2^31");
  if (n >= (int64_t{1} << 31)) return BadShape(kOp, "at most 2^31-1 keys");
  return ffi::Error::Success();
}

// gather_tagged: tags and slots (n,), rows (n, D), every table (C_t, D) of the
// rows' dtype; fills the tables' base pointers and capacities.
inline ffi::Error CheckGatherTagged(ffi::BufferR1<ffi::S32> tags, ffi::BufferR1<ffi::S32> slots,
                                    ffi::RemainingArgs tables, ffi::Result<ffi::AnyBuffer> rows,
                                    std::vector<const void*>* base,
                                    std::vector<int64_t>* capacity) {
  constexpr const char* kOp = "hypereca_gather_tagged";
  const int64_t n = slots.dimensions()[0];
  const int64_t num_tables = static_cast<int64_t>(tables.size());
  if (tags.dimensions()[0] != n || num_tables == 0 || rows->dimensions().size() != 2 ||
      rows->dimensions()[0] != n) {
    return BadShape(kOp, "tags and slots (n,), rows (n, dim), and at least one table");
  }
  const int64_t dim = rows->dimensions()[1];
  base->assign(num_tables, nullptr);
  capacity->assign(num_tables, 0);
  for (int64_t t = 0; t < num_tables; ++t) {
    auto v = tables.get<ffi::AnyBuffer>(t);
    if (v.has_error()) return v.error();
    auto d = v->dimensions();
    if (d.size() != 2 || d[1] != dim || v->element_type() != rows->element_type()) {
      return BadShape(kOp, "every table must be (C, dim) of the rows' dtype");
    }
    (*base)[t] = v->untyped_data();
    (*capacity)[t] = d[0];
  }
  return ffi::Error::Success();
}

}  // namespace hypereca

// Validation of operands shared by every table op, on CPU and CUDA alike (one
// set of checks and messages for both platforms).
#pragma once

#include <cstdint>
#include <string>

#include "hypereca/common.h"
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
  if (init_kind < 0 || init_kind > 2 || policy < 0 || policy > 1) {
    return BadShape(kOp, "bad init_kind or policy");
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
  if (init_kind < 0 || init_kind > 2) return ffi::Unexpected(BadShape(kOp, "bad init_kind"));
  return g;
}

}  // namespace hypereca

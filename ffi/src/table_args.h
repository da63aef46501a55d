// Validation of the table-state operands shared by every table op.
#pragma once

#include <cstdint>
#include <string>

#include "cpu_util.h"
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
  TableShape shape;
  shape.geometry.capacity = capacity;
  shape.geometry.bucket_size = static_cast<uint32_t>(bucket_size);
  shape.geometry.num_buckets =
      bucket_size > 0 ? static_cast<uint64_t>(capacity / bucket_size) : 0;
  if (bucket_size <= 0 || bucket_size > (int64_t{1} << 16) || !shape.geometry.Valid()) {
    return ffi::Unexpected(ffi::Error::InvalidArgument(ShapeError(
        op, "bucket_size must be a power of two <= 65536 dividing the capacity " +
                std::to_string(capacity) + " (got " + std::to_string(bucket_size) + ")")));
  }
  shape.dim = vdims[1];
  shape.state_width = opt.dimensions()[1];
  return shape;
}

}  // namespace hypereca

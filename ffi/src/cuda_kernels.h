// Plain C++ launchers of the CUDA kernels (no XLA header here: the .cu files
// that implement them compile in seconds, the FFI bindings live in the
// <op>_cuda.cc files). Every launcher enqueues its work on `stream` only, never
// synchronizes, and returns the first CUDA error with the step it came from.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace hypereca::cuda {

// Storage dtype of table values (bf16 travels as its raw uint16 bits).
enum class ValueType : int32_t { kF32 = 0, kBf16 = 1 };

inline size_t ValueBytes(ValueType t) { return t == ValueType::kF32 ? 4 : 2; }

// Outcome of a launcher: err != cudaSuccess names the failed step in `what`
// (a string literal).
struct LaunchStatus {
  cudaError_t err = cudaSuccess;
  const char* what = "";
  bool ok() const { return err == cudaSuccess; }
};

// ---------------------------------------------------------------- find_or_insert
// Same semantics as ffi/src/find_or_insert_cpu.cc (see ffi/include/hypereca/
// probe.h). Every pointer is device memory; the table arrays are the aliased
// outputs, already holding the input table (the handler copies first when XLA
// did not alias them).
struct FindOrInsertArgs {
  // Table shard, updated in place.
  int64_t* keys = nullptr;       // (C,)
  void* values = nullptr;        // (C, D) f32 | bf16 bits
  float* opt = nullptr;          // (C, K)
  int64_t* last_step = nullptr;  // (C,)
  int64_t* freq = nullptr;       // (C,)
  int64_t* counters = nullptr;   // (>= 16,)
  int64_t capacity = 0;          // C (< 2^31)
  uint32_t bucket_size = 0;      // power of two <= 65536 dividing C
  uint64_t num_buckets = 0;      // C / bucket_size
  int64_t dim = 0;               // D
  int64_t width = 0;             // K (may be 0)
  ValueType value_type = ValueType::kF32;
  // Inputs.
  const int64_t* query = nullptr;     // (n,)
  int64_t n = 0;                      // < 2^31
  const int64_t* step = nullptr;      // () device scalar
  const int64_t* pin_from = nullptr;  // () device scalar
  const float* opt_init = nullptr;    // (K,)
  uint64_t seed = 0;
  int32_t init_kind = 0;  // InitKind
  float init_scale = 0.f;
  int32_t policy = 0;     // ScorePolicy
  // Outputs.
  int32_t* slots = nullptr;     // (n,)
  bool* found = nullptr;        // (n,)
  int64_t* ev_keys = nullptr;   // (E,) kEmptyKey past the count
  void* ev_values = nullptr;    // (E, D) unspecified past the count (as on CPU)
  float* ev_opt = nullptr;      // (E, K) unspecified past the count (as on CPU)
  int64_t* ev_last = nullptr;   // (E,)
  int64_t* ev_freq = nullptr;   // (E,)
  int64_t ev_capacity = 0;      // E
  int64_t* status = nullptr;    // (status_len >= 8,)
  int64_t status_len = 0;
};

// Device scratch bytes FindOrInsert needs (a size query: launches nothing).
LaunchStatus FindOrInsertScratchBytes(const FindOrInsertArgs& a, size_t* bytes);

// Enqueues the whole op. `scratch` holds at least FindOrInsertScratchBytes
// bytes, 256-byte aligned, valid until the enqueued work has run.
LaunchStatus FindOrInsert(const FindOrInsertArgs& a, void* scratch, size_t scratch_bytes,
                          cudaStream_t stream);

// ---------------------------------------------------------------- find
struct FindArgs {
  const int64_t* keys = nullptr;  // (C,)
  const void* values = nullptr;   // (C, D)
  int64_t capacity = 0;
  uint32_t bucket_size = 0;
  uint64_t num_buckets = 0;
  int64_t dim = 0;
  ValueType value_type = ValueType::kF32;
  const int64_t* query = nullptr;  // (n,)
  int64_t n = 0;
  uint64_t seed = 0;
  int32_t init_kind = 0;
  float init_scale = 0.f;
  bool miss_init = false;
  bool want_rows = true;       // false: rows is (0, D), only slots and found are written
  void* rows = nullptr;        // (n, D), or (0, D) when !want_rows
  int32_t* slots = nullptr;    // (n,)
  bool* found = nullptr;       // (n,)
};

LaunchStatus Find(const FindArgs& a, cudaStream_t stream);

// ---------------------------------------------------------------- gather
struct GatherArgs {
  const void* values = nullptr;    // (C, D)
  int64_t capacity = 0;
  int64_t dim = 0;
  ValueType value_type = ValueType::kF32;
  const int32_t* slots = nullptr;  // (n,) -1: no row (zeros)
  int64_t n = 0;
  void* rows = nullptr;            // (n, D)
  int64_t* bad_slots = nullptr;    // () slots outside [-1, capacity) (zeros), counted
};

LaunchStatus Gather(const GatherArgs& a, cudaStream_t stream);

// ---------------------------------------------------------------- gather_tagged
// Row i comes from table tags[i] at slots[i]; a bad tag or slot gives zeros.
struct GatherTaggedArgs {
  const void* const* tables = nullptr;  // host array of num_tables device pointers
  const int64_t* capacities = nullptr;  // host array (num_tables,)
  int64_t num_tables = 0;
  int64_t dim = 0;
  ValueType value_type = ValueType::kF32;
  const int32_t* tags = nullptr;   // (n,)
  const int32_t* slots = nullptr;  // (n,)
  int64_t n = 0;
  void* rows = nullptr;            // (n, D)
};

LaunchStatus GatherTagged(const GatherTaggedArgs& a, cudaStream_t stream);

// ---------------------------------------------------------------- apply_gradients
// Same semantics as ffi/src/apply_gradients_cpu.cc. Duplicate slots are summed
// by a stable sort + segmented reduction: in query order (bit-identical to the
// CPU) for slots with at most kApplyExactRun occurrences, in a fixed tree of
// query-ordered pieces beyond; deterministic either way.
constexpr int64_t kApplyExactRun = 256;

struct ApplyGradientsArgs {
  void* values = nullptr;        // (C, D) updated in place
  float* opt = nullptr;          // (C, K) updated in place
  int64_t* counters = nullptr;   // (>= 16,) updated in place
  int64_t capacity = 0;          // C (< 2^31)
  int64_t dim = 0;
  int64_t width = 0;
  ValueType value_type = ValueType::kF32;
  int32_t optimizer = 0;         // OptimizerKind
  const int32_t* slots = nullptr;  // (n,)
  const float* grads = nullptr;    // (n, D)
  int64_t n = 0;                   // < 2^31
  const float* hparams = nullptr;  // (>= 8,) device
  int64_t* status = nullptr;       // (status_len >= 4,)
  int64_t status_len = 0;
};

LaunchStatus ApplyGradientsScratchBytes(const ApplyGradientsArgs& a, size_t* bytes);
LaunchStatus ApplyGradients(const ApplyGradientsArgs& a, void* scratch, size_t scratch_bytes,
                            cudaStream_t stream);

// ---------------------------------------------------------------- erase / erase_if
// A table shard's keys, scores and counters (updated in place) and geometry:
// what erase, erase_if and import_rows share.
struct TableMeta {
  int64_t* keys = nullptr;       // (C,) updated in place
  int64_t* last_step = nullptr;  // (C,)
  int64_t* freq = nullptr;       // (C,)
  int64_t* counters = nullptr;   // (>= 16,)
  int64_t capacity = 0;
  uint32_t bucket_size = 0;
  uint64_t num_buckets = 0;
};

struct EraseArgs {
  TableMeta table;
  const int64_t* query = nullptr;  // (n,)
  int64_t n = 0;                   // < 2^31
  bool* erased = nullptr;          // (n,)
};

LaunchStatus EraseScratchBytes(const EraseArgs& a, size_t* bytes);
LaunchStatus Erase(const EraseArgs& a, void* scratch, size_t scratch_bytes,
                   cudaStream_t stream);

struct EraseIfArgs {
  TableMeta table;
  const int64_t* threshold = nullptr;  // () device scalar
  int32_t mode = 0;                    // ExportMode
  int32_t policy = 0;                  // ScorePolicy
  int64_t* erased = nullptr;           // () rows removed
};

LaunchStatus EraseIf(const EraseIfArgs& a, cudaStream_t stream);

// ---------------------------------------------------------------- export
struct ExportArgs {
  const int64_t* keys = nullptr;
  const void* values = nullptr;
  const float* opt = nullptr;
  const int64_t* last_step = nullptr;
  const int64_t* freq = nullptr;
  int64_t capacity = 0;
  int64_t dim = 0;
  int64_t width = 0;
  ValueType value_type = ValueType::kF32;
  const int64_t* cursor = nullptr;     // () device scalar
  const int64_t* threshold = nullptr;  // () device scalar
  int32_t mode = 0;
  int32_t policy = 0;
  int64_t chunk = 0;                   // M
  int64_t* out_keys = nullptr;         // (M,)
  void* out_values = nullptr;          // (M, D)
  float* out_opt = nullptr;            // (M, K)
  int64_t* out_last = nullptr;         // (M,)
  int64_t* out_freq = nullptr;         // (M,)
  int64_t* info = nullptr;             // (>= 2,) count, next cursor
};

LaunchStatus ExportScratchBytes(const ExportArgs& a, size_t* bytes);
LaunchStatus Export(const ExportArgs& a, void* scratch, size_t scratch_bytes,
                    cudaStream_t stream);

// ---------------------------------------------------------------- import_rows
struct ImportArgs {
  TableMeta table;               // updated in place, with:
  void* values = nullptr;        // (C, D)
  float* opt = nullptr;          // (C, K)
  int64_t dim = 0;
  int64_t width = 0;
  ValueType value_type = ValueType::kF32;
  const int64_t* in_keys = nullptr;  // (n,)
  const void* in_values = nullptr;   // (n, D)
  const float* in_opt = nullptr;     // (n, K)
  const int64_t* in_last = nullptr;  // (n,)
  const int64_t* in_freq = nullptr;  // (n,)
  int64_t n = 0;                     // < 2^31
  int32_t* slots = nullptr;          // (n,)
  int64_t* status = nullptr;         // (status_len >= 4,)
  int64_t status_len = 0;
};

LaunchStatus ImportScratchBytes(const ImportArgs& a, size_t* bytes);
LaunchStatus Import(const ImportArgs& a, void* scratch, size_t scratch_bytes,
                    cudaStream_t stream);

// ---------------------------------------------------------------- unique
struct UniqueArgs {
  const int64_t* keys = nullptr;  // (n,)
  int64_t n = 0;                  // < 2^31
  int64_t* uniq = nullptr;        // (n,)
  int32_t* inverse = nullptr;     // (n,)
  int32_t* count = nullptr;       // ()
};

LaunchStatus UniqueScratchBytes(const UniqueArgs& a, size_t* bytes);
LaunchStatus Unique(const UniqueArgs& a, void* scratch, size_t scratch_bytes,
                    cudaStream_t stream);

// ---------------------------------------------------------------- bucketize
struct BucketizeArgs {
  const int64_t* keys = nullptr;  // (n,)
  int64_t n = 0;                  // < 2^31
  int64_t shards = 0;             // W
  int64_t cap = 0;                // per-owner capacity
  int64_t* send = nullptr;        // (W, cap)
  int32_t* counts = nullptr;      // (W,)
  int32_t* position = nullptr;    // (n,)
};

LaunchStatus BucketizeScratchBytes(const BucketizeArgs& a, size_t* bytes);
LaunchStatus Bucketize(const BucketizeArgs& a, void* scratch, size_t scratch_bytes,
                       cudaStream_t stream);

}  // namespace hypereca::cuda

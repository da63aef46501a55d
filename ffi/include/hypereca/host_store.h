// The host tier of one owner shard (DESIGN.md section 3.4, issue 14): a
// growable in-process store mapping an int64 key to a whole row -- its values
// (value_bytes, the row's dim elements in the table's dtype), its float32
// optimizer state (state_width words) and its two int64 scores (last access
// step, access count). Rows the device tier evicts are put here; rows a batch
// needs are taken (removed) from here before its step. XLA- and Python-free;
// the nanobind binding (ffi/src/host_store_bindings.cc) releases the GIL
// around every call below.
//
// Layout. Keys are split over `partitions` fixed hash partitions. Each
// partition keeps its rows as contiguous fixed-stride records (key, last_step,
// freq, values, state) in one buffer, holes left by removals on a LIFO free
// list that later puts reuse, and an open-addressing index (linear probing,
// backward-shift deletion, no tombstones, load <= 1/2) from key to record.
// A call's keys are processed in chunks with software prefetching of the
// index slots and then of the records, so the cache misses of a chunk overlap.
//
// Threads. With threads > 1 and a call of at least parallel_min_keys keys
// (for TTL: records), thread t handles the keys
// of the partitions p with p % threads == t. Every key of one partition is
// processed by one thread in call order, so every call has the semantics of
// processing its keys one after another in call order, whatever the number of
// threads: duplicates within a put leave the LAST occurrence's row; within a
// take the first occurrence finds (and removes) the row, later ones miss.
// Calls on one store are serialized by a mutex (a loader thread may take while
// the main thread puts).
//
// Determinism. The state, and so the export order (partition by partition,
// record position order), is a function of the sequence of calls and of
// `partitions` only -- not of `threads` or timing.
//
// Reserved keys. kEmptyKey (-1, the padding id) and kErasedKey (-2) are never
// stored: Put throws std::invalid_argument on either, before anything is
// applied. Take, Peek and Erase throw on kErasedKey and skip kEmptyKey
// queries (padding of a batch; never found, not counted).
//
// Memory. Bytes() counts every buffer the store holds (records, index, free
// lists) at their allocated capacity. A put that would have to grow the store
// past memory_limit_bytes (0: no limit) applies nothing and reports the
// numbers (PutResult): the caller keeps its rows. Capacity grows by doubling
// when that fits the limit, else exactly to what the put needs. Removed rows
// leave holes that later puts fill; memory is not returned before the store
// is destroyed (a tier that shrinks for good should be exported and rebuilt).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "hypereca/common.h"

namespace hypereca {

struct HostStoreConfig {
  int64_t value_bytes = 0;         // bytes of one row's values (dim * itemsize), > 0
  int64_t state_width = 0;         // float32 optimizer-state words per row, >= 0
  int64_t memory_limit_bytes = 0;  // 0: unlimited
  int32_t partitions = 16;         // fixed; the export order depends on it, >= 1
  int32_t threads = 1;             // worker threads per large call, 1..partitions
  int64_t parallel_min_keys = 32768;  // calls with fewer keys (rows) run on one thread
};

// Cumulative counters. Accounting, always:
//   inserted = size + take_hits + erased + ttl_evicted
//   put_rows = inserted + overwritten   (refused puts count in put_refused only)
enum HostCounter : int32_t {
  kHcPutRows = 0,      // rows applied by put (duplicates included)
  kHcInserted = 1,     // of those, keys that were not resident
  kHcOverwritten = 2,  // of those, keys already resident: row replaced
  kHcTakeHits = 3,     // take queries that found (and removed) their row
  kHcTakeMisses = 4,   // take queries that found nothing
  kHcErased = 5,       // rows removed by erase
  kHcEraseMisses = 6,  // erase queries that found nothing
  kHcTtlEvicted = 7,   // rows removed by evict_older_than
  kHcPutRefused = 8,   // rows of puts refused by the memory limit
  kNumHostCounters = 9,
};
inline constexpr const char* kHostCounterNames[kNumHostCounters] = {
    "put_rows", "inserted", "overwritten", "take_hits", "take_misses",
    "erased",   "erase_misses", "ttl_evicted", "put_refused"};

// n rows in the caller's arrays: keys (n), values (n * value_bytes), state
// (n * state_width), last_step (n), freq (n). Row-major, contiguous.
struct HostRowsIn {
  const int64_t* keys;
  const uint8_t* values;
  const float* state;
  const int64_t* last_step;
  const int64_t* freq;
  int64_t n;
};

// Output rows of Take / Peek / Export, same layout as HostRowsIn. A null
// pointer skips that field (Contains passes only `found`). Rows not found are
// zero-filled, unless zero_misses is false: then only found[i] (which must
// not be null) says a row is missing and its other fields are left as they
// were (the stager reads found rows only: no fill of the ~85% misses).
// found[i] is 1 or 0.
struct HostRowsOut {
  uint8_t* found = nullptr;
  int64_t* keys = nullptr;  // Export only
  uint8_t* values = nullptr;
  float* state = nullptr;
  int64_t* last_step = nullptr;
  int64_t* freq = nullptr;
  bool zero_misses = true;
};

struct PutResult {
  bool applied;          // false: refused by the memory limit, nothing changed
  int64_t new_keys;      // keys not resident before the put (when refused: duplicates
                         // counted once only in the partitions that had to grow)
  int64_t bytes_before;  // Bytes() before the call
  int64_t bytes_after;   // Bytes() after it (when refused: what it would have needed)
};

class HostStore {
 public:
  // Throws std::invalid_argument on a config outside the ranges above.
  explicit HostStore(const HostStoreConfig& config);
  ~HostStore();
  HostStore(const HostStore&) = delete;
  HostStore& operator=(const HostStore&) = delete;

  // Inserts or overwrites rows (last occurrence wins), all or nothing.
  PutResult Put(const HostRowsIn& rows);
  // Grows the store, before rows arrive, so that any puts adding at most
  // `rows` new keys to each partition in all need no growth (the caller
  // reserves room for rows it will put later; doubling where that fits the
  // limit, else exactly). Refused past memory_limit_bytes: nothing changes,
  // applied false and bytes_after what the room would have needed.
  // new_keys is 0. Throws std::invalid_argument when rows < 0.
  PutResult MakeRoom(int64_t rows);
  // Copies out and removes the rows of `keys` (n); misses zero-filled (see
  // HostRowsOut.zero_misses). Throws std::invalid_argument when zero_misses
  // is false and found is null.
  void Take(const int64_t* keys, int64_t n, const HostRowsOut& out);
  // Copies out the rows of `keys` without removing them (nothing counted).
  void Peek(const int64_t* keys, int64_t n, const HostRowsOut& out) const;
  // Removes the rows of `keys`; returns how many were resident.
  int64_t Erase(const int64_t* keys, int64_t n);
  // Removes every row with last_step < step (TTL); returns their keys in
  // export order.
  std::vector<int64_t> EvictOlderThan(int64_t step);
  // Copies out up to max_rows rows in export order, starting at `cursor` (0
  // for the first chunk). Returns the next cursor, or -1 when no rows are
  // left; *rows_out = rows written. The store must not change between the
  // chunks of one export.
  int64_t Export(int64_t cursor, int64_t max_rows, const HostRowsOut& out,
                 int64_t* rows_out) const;

  int64_t Size() const;
  int64_t Bytes() const;
  std::vector<int64_t> Counters() const;  // kNumHostCounters values
  const HostStoreConfig& config() const { return config_; }
  void set_memory_limit_bytes(int64_t limit);  // >= 0

  struct Partition;  // defined in host_store.cc

 private:
  std::vector<int64_t> PlanPut(const HostRowsIn& rows, int threads,
                               std::vector<int64_t>& misses);

  HostStoreConfig config_;
  int64_t stride_;  // bytes of one record
  std::vector<Partition> parts_;
  std::vector<int64_t> counters_;
  mutable std::mutex mu_;
};

// Index of the first key equal to kErasedKey (or, unless allow_padding, to
// kEmptyKey) in keys[0, n), or -1.
int64_t FirstReservedKey(const int64_t* keys, int64_t n, bool allow_padding);

}  // namespace hypereca

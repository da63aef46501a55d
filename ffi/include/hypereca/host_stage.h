// Staging: the host-tier rows of one batch, routed to their owner shards and
// packed for one transfer to the devices (jax_hypereca/tiers.py,
// HostTier.stage; DESIGN.md section 3.4, issue 14). XLA- and Python-free; the
// binding (ffi/src/host_store_bindings.cc) releases the GIL around each call.
//
// A stager serves the tables of one row layout (value_bytes, state_width): T
// tables, each with its own HostStore and its batch's unique ids. Two phases,
// so that a caller with several processes can agree the block size between
// them:
//
//   Collect(tables, take, local)  looks every table's ids up in its store --
//       Take (promotion: the rows leave the store) or Peek (evaluation) --
//       skipping ids whose owner shard is not local (another process holds
//       their rows); keeps the rows found and their owners; returns the most
//       rows one (owner, table) block holds.
//   Pack(S, out)  writes [W, T, S] rows: block (d, t) holds table t's found
//       rows owned by shard d and S - count padding rows (key kPaddingKey,
//       every other field zero), the S sorted by key as signed int64 (the
//       padding sorts in among them; the device binary-searches a block).
//       S must be >= Collect's result.
//
// Pack may be called again (with another S) until the next Collect. Rows a
// Collect took are only in the stager until the caller has packed them: the
// caller owns them from Collect on (tiers.py keeps them until the step is
// settled).
//
// Threads: Collect splits the tables over `threads`, largest first to the
// least loaded thread; Pack uses a second thread only for many rows (a
// thread's start costs ~40 us). Each store serializes its own calls, so other
// threads may use the stores meanwhile. Buffers persist between calls (no
// fresh pages per batch). Ids given sorted (as the tier gives them) need no
// sort here: a block's order comes from a counting pass over the owners.
#pragma once

#include <cstdint>
#include <vector>

#include "hypereca/host_store.h"

namespace hypereca {

struct StageTable {
  HostStore* store;     // the table's store; its config's layout is the stager's
  const int64_t* keys;  // the batch's unique ids of the table (no padding)
  int64_t n;
};

class HostStager {
 public:
  // Throws std::invalid_argument unless value_bytes > 0, state_width >= 0,
  // num_shards >= 1 and threads >= 1.
  HostStager(int64_t value_bytes, int64_t state_width, int32_t num_shards, int32_t threads);

  // Phase 1 (see above). `local`: num_shards flags, nonzero for the shards
  // whose rows this process holds. Throws std::invalid_argument, having
  // looked nothing up, when a store's layout differs from the stager's or an
  // id is kErasedKey.
  int64_t Collect(const std::vector<StageTable>& tables, bool take, const uint8_t* local);

  // Phase 2 (see above): out's keys, values, state, last_step and freq hold
  // num_shards * tables * S rows (found is not used). Throws
  // std::invalid_argument when S is below the most rows of one block.
  void Pack(int64_t S, const HostRowsOut& out) const;

  int64_t looked_up() const { return looked_up_; }  // ids looked up by the last Collect
  int64_t found() const { return found_; }          // of those, rows found
  int32_t num_shards() const { return num_shards_; }
  int64_t value_bytes() const { return value_bytes_; }
  int64_t state_width() const { return state_width_; }
  int64_t num_tables() const { return static_cast<int64_t>(tables_.size()); }

 private:
  struct Table {  // one table's lookups of the last Collect
    std::vector<int64_t> keys;     // the local ids looked up
    std::vector<uint32_t> owner;   // their owner shards
    std::vector<uint8_t> found;    // per id
    std::vector<uint8_t> values;   // per id, value_bytes
    std::vector<float> state;      // per id, state_width
    std::vector<int64_t> last, freq;
    std::vector<int64_t> order;    // found ids' positions, by (owner, key)
    std::vector<int64_t> count;    // found rows per owner shard
    std::vector<int64_t> start;    // scratch: where each owner's rows go in order
  };
  void CollectTable(const StageTable& in, bool take, const uint8_t* local, Table& t);
  void PackTable(int64_t ti, int64_t S, const HostRowsOut& out) const;

  int64_t value_bytes_, state_width_;
  int32_t num_shards_, threads_;
  std::vector<Table> tables_;
  int64_t looked_up_ = 0, found_ = 0, most_ = 0;
};

}  // namespace hypereca

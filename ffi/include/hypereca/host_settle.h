// Settling: rows of several tables of one row layout, packed in one set of
// row arrays, put into each table's HostStore in one call (jax_hypereca/
// tiers.py, HostTier.settle: the staged rows a step did not write go back,
// the rows it evicted go in; DESIGN.md section 3.4, issue 14). XLA- and
// Python-free; the binding (ffi/src/host_store_bindings.cc) releases the GIL.
//
// PutPacked(stores, rows, table, threads): row i of `rows` belongs to table
// table[i] (an index into `stores`), or to none when table[i] == -1 (padding,
// a block's unused rows: never read). Each table's rows are put into its
// store with one HostStore::Put, in row order -- so, as with Put, the last
// occurrence of a key wins. Each put is all or nothing on its own: the
// result holds every table's PutResult (applied false: that store's memory
// limit refused the rows, nothing of that table changed, the caller still
// holds them; tables with no rows: applied, 0 new keys, bytes unchanged).
//
// Everything that can fail otherwise is checked before any store changes:
// std::invalid_argument when a table index is outside [-1, stores), a
// selected row's key is reserved (kEmptyKey, kErasedKey) or a store's layout
// (value_bytes, state_width) differs from the first store's.
//
// Threads: tables are split over `threads` (table t on thread t % threads);
// each store serializes its own calls. An exception in a put (memory for a
// store's growth: that store unchanged) is rethrown once every thread is
// done; the tables other threads put by then are applied.
#pragma once

#include <cstdint>
#include <vector>

#include "hypereca/host_store.h"

namespace hypereca {

std::vector<PutResult> PutPacked(const std::vector<HostStore*>& stores, const HostRowsIn& rows,
                                 const int32_t* table, int threads);

}  // namespace hypereca

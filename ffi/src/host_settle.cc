// Settling packed rows into their tables' stores (contracts in
// ffi/include/hypereca/host_settle.h).
#include "hypereca/host_settle.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>

#include "hypereca/threads.h"

namespace hypereca {
namespace {

void Validate(const std::vector<HostStore*>& stores, const HostRowsIn& rows,
              const int32_t* table) {
  const int64_t T = static_cast<int64_t>(stores.size());
  for (int64_t t = 1; t < T; ++t) {
    const HostStoreConfig &a = stores[0]->config(), &b = stores[t]->config();
    if (a.value_bytes != b.value_bytes || a.state_width != b.state_width) {
      throw std::invalid_argument(
          "host settle: store " + std::to_string(t) + " holds rows of value_bytes=" +
          std::to_string(b.value_bytes) + " state_width=" + std::to_string(b.state_width) +
          ", store 0 of " + std::to_string(a.value_bytes) + " and " +
          std::to_string(a.state_width) + " (one call per row layout)");
    }
  }
  for (int64_t i = 0; i < rows.n; ++i) {
    const int32_t t = table[i];
    if (t < -1 || t >= T) {
      throw std::invalid_argument("host settle: row " + std::to_string(i) + " names table " +
                                  std::to_string(t) + " of " + std::to_string(T) +
                                  "; nothing was put");
    }
    if (t >= 0 && (rows.keys[i] == kEmptyKey || rows.keys[i] == kErasedKey)) {
      throw std::invalid_argument("host settle: row " + std::to_string(i) + " (table " +
                                  std::to_string(t) + ") has the reserved key " +
                                  std::to_string(rows.keys[i]) + "; nothing was put");
    }
  }
}

// One table's rows, gathered in row order from the packed arrays.
struct Gathered {
  std::vector<int64_t> keys, last, freq;
  std::vector<uint8_t> values;
  std::vector<float> state;

  HostRowsIn Gather(const HostRowsIn& rows, const int64_t* idx, int64_t n, int64_t vb,
                    int64_t sw) {
    keys.resize(n);
    last.resize(n);
    freq.resize(n);
    values.resize(n * vb);
    state.resize(n * sw);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t i = idx[j];
      keys[j] = rows.keys[i];
      last[j] = rows.last_step[i];
      freq[j] = rows.freq[i];
      std::memcpy(values.data() + j * vb, rows.values + i * vb, vb);
      if (sw) std::memcpy(state.data() + j * sw, rows.state + i * sw, 4 * sw);
    }
    return {keys.data(), values.data(), sw ? state.data() : nullptr, last.data(), freq.data(),
            n};
  }
};

}  // namespace

std::vector<PutResult> PutPacked(const std::vector<HostStore*>& stores, const HostRowsIn& rows,
                                 const int32_t* table, int threads) {
  const int64_t T = static_cast<int64_t>(stores.size());
  if (threads < 1) {
    throw std::invalid_argument("host settle: threads must be >= 1, got " +
                                std::to_string(threads));
  }
  if (T == 0) return {};
  Validate(stores, rows, table);
  // A counting sort of the selected rows by table keeps row order per table.
  std::vector<int64_t> start(T + 1, 0), idx;
  for (int64_t i = 0; i < rows.n; ++i) {
    if (table[i] >= 0) ++start[table[i] + 1];
  }
  for (int64_t t = 0; t < T; ++t) start[t + 1] += start[t];
  idx.resize(start[T]);
  std::vector<int64_t> next(start.begin(), start.end() - 1);
  for (int64_t i = 0; i < rows.n; ++i) {
    if (table[i] >= 0) idx[next[table[i]]++] = i;
  }
  const int64_t vb = stores[0]->config().value_bytes, sw = stores[0]->config().state_width;
  std::vector<PutResult> out(T, PutResult{true, 0, 0, 0});
  const int workers = static_cast<int>(std::min<int64_t>(threads, T));
  // RunThreads' fn must not throw: an allocation failure (Put's growth is
  // all or nothing) is rethrown here, after every worker has joined.
  std::vector<std::exception_ptr> failed(workers);
  RunThreads(workers, [&](int w) {
    try {
      Gathered g;
      for (int64_t t = w; t < T; t += workers) {
        const int64_t n = start[t + 1] - start[t];
        if (n == 0) continue;
        out[t] = stores[t]->Put(g.Gather(rows, idx.data() + start[t], n, vb, sw));
      }
    } catch (...) {
      failed[w] = std::current_exception();
    }
  });
  for (const std::exception_ptr& e : failed) {
    if (e) std::rethrow_exception(e);
  }
  return out;
}

}  // namespace hypereca

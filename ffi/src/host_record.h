// One host-store record: where a row's fields sit in it and the copies
// between records and the caller's row arrays (hypereca/host_store.h). Only
// ffi/src/host_store.cc includes this.
//
// A record is key, last_step, freq (int64 each), the values (value_bytes,
// padded to 4 bytes), the optimizer state (state_width float32), the whole
// padded to 8 bytes. Fields are copied with memcpy: records sit at any
// multiple of the stride in a byte buffer.
#pragma once

#include <cstdint>
#include <cstring>

#include "hypereca/common.h"
#include "hypereca/host_store.h"

namespace hypereca {
namespace record {

constexpr int64_t kKeyOff = 0, kLastOff = 8, kFreqOff = 16, kValuesOff = 24;

inline int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

inline int64_t LoadI64(const uint8_t* p) {
  int64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void StoreI64(uint8_t* p, int64_t v) { std::memcpy(p, &v, sizeof v); }

// Bytes of one record of this config's rows.
inline int64_t RecordStride(const HostStoreConfig& c) {
  return RoundUp(kValuesOff + RoundUp(c.value_bytes, 4) + 4 * c.state_width, 8);
}

// Copies between records and row i of the caller's arrays.
struct RecordLayout {
  int64_t vb, sw, state_off;
  explicit RecordLayout(const HostStoreConfig& c)
      : vb(c.value_bytes), sw(c.state_width), state_off(kValuesOff + RoundUp(c.value_bytes, 4)) {}

  void Write(uint8_t* rec, const HostRowsIn& in, int64_t i) const {
    StoreI64(rec + kKeyOff, in.keys[i]);
    StoreI64(rec + kLastOff, in.last_step[i]);
    StoreI64(rec + kFreqOff, in.freq[i]);
    std::memcpy(rec + kValuesOff, in.values + i * vb, vb);
    if (sw) std::memcpy(rec + state_off, in.state + i * sw, 4 * sw);
  }
  void Read(const uint8_t* rec, const HostRowsOut& out, int64_t i) const {
    if (out.found) out.found[i] = 1;
    if (out.keys) out.keys[i] = LoadI64(rec + kKeyOff);
    if (out.last_step) out.last_step[i] = LoadI64(rec + kLastOff);
    if (out.freq) out.freq[i] = LoadI64(rec + kFreqOff);
    if (out.values) std::memcpy(out.values + i * vb, rec + kValuesOff, vb);
    if (out.state && sw) std::memcpy(out.state + i * sw, rec + state_off, 4 * sw);
  }
  // A miss: found[i] = 0 and, unless out.zero_misses is false, zero fields.
  void Zero(const HostRowsOut& out, int64_t i) const {
    if (out.found) out.found[i] = 0;
    if (!out.zero_misses) return;
    if (out.keys) out.keys[i] = kEmptyKey;
    if (out.last_step) out.last_step[i] = 0;
    if (out.freq) out.freq[i] = 0;
    if (out.values) std::memset(out.values + i * vb, 0, vb);
    if (out.state && sw) std::memset(out.state + i * sw, 0, 4 * sw);
  }
};

}  // namespace record
}  // namespace hypereca

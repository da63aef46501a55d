// A fork-join helper for the host-side native code (the host store and the
// stager): fn(t) for t in [0, threads) on short-lived threads.
#pragma once

#include <exception>
#include <thread>
#include <vector>

namespace hypereca {

// Runs fn(t) for t in [0, threads): t = 0, and any t no thread could be
// started for, on the calling thread. fn must not throw.
template <class Fn>
void RunThreads(int threads, Fn&& fn) {
  std::vector<std::thread> pool;
  int started = 1;
  try {
    pool.reserve(threads > 1 ? threads - 1 : 0);
    for (; started < threads; ++started) pool.emplace_back([&fn, t = started] { fn(t); });
  } catch (const std::exception&) {  // no thread (or no memory for one): run it here
  }
  for (int t = started; t < threads; ++t) fn(t);
  fn(0);
  for (auto& th : pool) th.join();
}

}  // namespace hypereca

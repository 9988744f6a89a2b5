// Property checks inside fuzz targets. A broken property is a finding: the message goes to
// stderr and abort() makes libFuzzer save the input that caused it.
#pragma once

#include <cstdio>
#include <cstdlib>

#define LOCKSTEP_FUZZ_CHECK(condition, ...)                                                 \
  do {                                                                                      \
    if (!(condition)) {                                                                     \
      std::fprintf(stderr, "%s:%d: property broken: %s\n", __FILE__, __LINE__, #condition); \
      std::fprintf(stderr, __VA_ARGS__);                                                    \
      std::fprintf(stderr, "\n");                                                           \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)

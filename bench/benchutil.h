/* Helpers shared by the bench programs (header-only: each bench is one binary). */
#ifndef SHMSHIM_BENCHUTIL_H
#define SHMSHIM_BENCHUTIL_H

#include <stdint.h>
#include <string.h>
#include <time.h>

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t ld64(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

static inline void st64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }

static inline size_t cat(char *dst, size_t at, size_t cap, const char *src) {
  while (*src && at + 1 < cap) dst[at++] = *src++;
  return at;
}

/* Cheap order-sensitive checksum: four independent multiply-xor lanes. */
static inline uint64_t csum(const unsigned char *p, size_t n) {
  const uint64_t K = 0x9e3779b97f4a7c15ull;
  uint64_t a = 1, b = 2, c = 3, d = 4;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a = (a ^ ld64(p + i)) * K;
    b = (b ^ ld64(p + i + 8)) * K;
    c = (c ^ ld64(p + i + 16)) * K;
    d = (d ^ ld64(p + i + 24)) * K;
  }
  for (; i < n; i++) a = (a ^ p[i]) * K;
  return a ^ (b << 1 | b >> 63) ^ (c << 2 | c >> 62) ^ (d << 3 | d >> 61) ^ n;
}

static inline void fill_pattern(unsigned char *p, size_t n, uint64_t seed) {
  uint64_t x = seed;
  for (size_t i = 0; i < n; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    size_t c = n - i < 8 ? n - i : 8;
    memcpy(p + i, &x, c);
  }
}

#endif

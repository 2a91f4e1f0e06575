/* Shared by the libFuzzer targets: an assertion that stops the fuzzer (it reports the input
 * that broke it), and the invariants several targets check on what a parser hands on. */
#ifndef PGW_FUZZ_UTIL_H
#define PGW_FUZZ_UTIL_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond);      \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Nonzero when the n bytes at s are valid UTF-8 without NUL: what jansson accepts as a JSON
 * string, hence what a log line, an audit line or an HTTP error body can carry. A message a
 * parser produces from untrusted input must pass, or the line or body that quotes it is lost
 * (json_pack fails on invalid UTF-8). */
static inline int fuzz_json_safe(const char *s, size_t n)
{
    if (!s || memchr(s, '\0', n))
        return 0;
    json_t *j = json_stringn(s, n);
    int ok = j != NULL;
    json_decref(j);
    return ok;
}

static inline int fuzz_json_safe_str(const char *s)
{
    return s && fuzz_json_safe(s, strlen(s));
}

/* Nonzero when every byte of s is printable ASCII. */
static inline int fuzz_printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
            return 0;
    return 1;
}

/* Splits the input into NUL-separated pieces (the last one need not be terminated). Returns
 * the number of pieces stored in out (at most max), each a fresh NUL-terminated copy inside
 * *buf (one allocation: free(*buf)). */
static inline size_t fuzz_split(const uint8_t *data, size_t size, char **out, size_t max,
                                char **buf)
{
    *buf = malloc(size + 1);
    if (!*buf)
        return 0;
    memcpy(*buf, data, size);
    (*buf)[size] = '\0';
    size_t n = 0;
    char *p = *buf, *end = *buf + size;
    while (n < max && p <= end) {
        out[n++] = p;
        p += strlen(p) + 1;
    }
    return n;
}

#endif

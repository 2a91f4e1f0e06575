/* The cache value codec: what the L1 and Redis tiers store for one batch inference job ARN.
 *
 * An entry is a fixed, versioned header followed by a payload. Every replica of the gateway
 * reads what the others wrote, so during a rolling deploy old and new binaries share Redis: the
 * magic and version bytes let a binary refuse (treat as a miss) any entry it does not fully
 * understand instead of misreading it.
 *
 * Layout (all integers big-endian):
 *   0  "PGW1"                 magic
 *   4  u8  version            PGW_CACHE_ENTRY_VERSION
 *   5  u8  kind               1 = POSITIVE, 2 = NEGATIVE
 *   6  u16 reserved           0
 *   8  i64 fetched_at_ms      wall clock, when the answer came from AWS
 *  16  i64 fresh_until_ms     wall clock, serve without revalidation until then
 *  24  i64 stale_until_ms     wall clock, usable as a fallback when upstream fails until then
 *  32  u32 payload_len
 *  36  payload                POSITIVE: packed personalize_gateway.v1.BatchInferenceJob
 *                             NEGATIVE: three u16-length-prefixed UTF-8 strings: AWS error code,
 *                             message, request id
 *
 * Pure functions: no I/O, no clock, no global state; safe from any thread. */
#ifndef PGW_CACHE_ENTRY_H
#define PGW_CACHE_ENTRY_H

#include <stddef.h>
#include <stdint.h>

#define PGW_CACHE_ENTRY_VERSION    1
#define PGW_CACHE_ENTRY_HEADER_LEN 36
#define PGW_CACHE_ENTRY_MAX_PAYLOAD                                                                \
    (1024 * 1024) /* a job is a few KiB; anything bigger is junk                                   \
                   */
#define PGW_CACHE_ENTRY_MAX_CODE    128
#define PGW_CACHE_ENTRY_MAX_MESSAGE 1024
#define PGW_CACHE_ENTRY_MAX_REQID   128

typedef enum pgw_cache_entry_kind {
    PGW_CACHE_ENTRY_POSITIVE = 1, /* the job exists: payload is the packed protobuf */
    PGW_CACHE_ENTRY_NEGATIVE = 2, /* AWS said NOT_FOUND: error code + message are kept */
} pgw_cache_entry_kind;

typedef struct pgw_cache_entry {
    pgw_cache_entry_kind kind;
    int64_t fetched_at_ms;  /* wall ms */
    int64_t fresh_until_ms; /* wall ms, >= fetched_at_ms */
    int64_t stale_until_ms; /* wall ms, >= fresh_until_ms */
    /* POSITIVE only. After decode it points into the decoded buffer (borrowed: valid as long
     * as that buffer is). For encode, the caller's bytes (copied). */
    const uint8_t *job_pb;
    size_t job_pb_len;
    /* NEGATIVE only: NUL-terminated; "" when absent. */
    char error_code[PGW_CACHE_ENTRY_MAX_CODE + 1];
    char message[PGW_CACHE_ENTRY_MAX_MESSAGE + 1];
    char request_id[PGW_CACHE_ENTRY_MAX_REQID + 1];
} pgw_cache_entry;

/* Serializes `entry`. Returns a malloc'd buffer (caller frees) and stores its length in
 * *out_len, or returns NULL when the entry is invalid (unknown kind, times out of order,
 * payload over PGW_CACHE_ENTRY_MAX_PAYLOAD, unterminated strings or strings that are not UTF-8)
 * or memory runs out. */
uint8_t *pgw_cache_entry_encode(const pgw_cache_entry *entry, size_t *out_len);

/* Parses `len` bytes into *out. Returns 0, or -1 for anything malformed (too short, wrong
 * magic or version, nonzero reserved bits, unknown kind, lengths inconsistent, payload over
 * the bound, times out of order, strings with NUL bytes or not UTF-8); the caller treats -1 as
 * a miss.
 * On success out->job_pb borrows from `buf`. */
int pgw_cache_entry_decode(const uint8_t *buf, size_t len, pgw_cache_entry *out);

/* Nonzero when the entry may be served as fresh at wall time now_ms. */
int pgw_cache_entry_is_fresh(const pgw_cache_entry *entry, int64_t now_ms);

/* Nonzero when the entry is past fresh but may still answer when upstream fails. */
int pgw_cache_entry_is_stale_usable(const pgw_cache_entry *entry, int64_t now_ms);

#endif

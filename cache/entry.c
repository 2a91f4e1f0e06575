/* Cache value codec; see entry.h for the byte layout. */
#include "cache/entry.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t pgw_entry_magic[4] = {'P', 'G', 'W', '1'};

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static void put_i64(uint8_t *p, int64_t v)
{
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(u >> (56 - 8 * i));
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v = (v << 8) | p[i];
    return v;
}

static int64_t get_i64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return (int64_t)v;
}

/* Length of a NUL-terminated string inside a fixed array, or -1 if it is not terminated. */
static long bounded_strlen(const char *s, size_t cap)
{
    const char *nul = memchr(s, '\0', cap);
    return nul ? (long)(nul - s) : -1;
}

/* Nonzero when the n bytes at s are valid UTF-8 (jansson's check, the one every JSON answer
 * and log line that quotes the string will apply). */
static int utf8_valid(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    json_decref(j);
    return j != NULL;
}

static int times_ordered(int64_t fetched, int64_t fresh, int64_t stale)
{
    return fetched <= fresh && fresh <= stale;
}

uint8_t *pgw_cache_entry_encode(const pgw_cache_entry *entry, size_t *out_len)
{
    const char *strs[3];
    long lens[3];
    size_t payload_len = 0;

    if (!entry || !out_len)
        return NULL;
    if (!times_ordered(entry->fetched_at_ms, entry->fresh_until_ms, entry->stale_until_ms))
        return NULL;
    if (entry->kind == PGW_CACHE_ENTRY_POSITIVE) {
        if (entry->job_pb_len > PGW_CACHE_ENTRY_MAX_PAYLOAD ||
            (entry->job_pb_len && !entry->job_pb))
            return NULL;
        payload_len = entry->job_pb_len;
    } else if (entry->kind == PGW_CACHE_ENTRY_NEGATIVE) {
        strs[0] = entry->error_code;
        lens[0] = bounded_strlen(entry->error_code, sizeof entry->error_code);
        strs[1] = entry->message;
        lens[1] = bounded_strlen(entry->message, sizeof entry->message);
        strs[2] = entry->request_id;
        lens[2] = bounded_strlen(entry->request_id, sizeof entry->request_id);
        for (int i = 0; i < 3; i++) {
            if (lens[i] < 0 || !utf8_valid(strs[i], (size_t)lens[i]))
                return NULL;
            payload_len += 2 + (size_t)lens[i];
        }
    } else {
        return NULL;
    }

    size_t total = PGW_CACHE_ENTRY_HEADER_LEN + payload_len;
    uint8_t *buf = malloc(total);
    if (!buf)
        return NULL;
    memcpy(buf, pgw_entry_magic, 4);
    buf[4] = PGW_CACHE_ENTRY_VERSION;
    buf[5] = (uint8_t)entry->kind;
    put_u16(buf + 6, 0);
    put_i64(buf + 8, entry->fetched_at_ms);
    put_i64(buf + 16, entry->fresh_until_ms);
    put_i64(buf + 24, entry->stale_until_ms);
    put_u32(buf + 32, (uint32_t)payload_len);
    uint8_t *p = buf + PGW_CACHE_ENTRY_HEADER_LEN;
    if (entry->kind == PGW_CACHE_ENTRY_POSITIVE) {
        if (payload_len)
            memcpy(p, entry->job_pb, payload_len);
    } else {
        for (int i = 0; i < 3; i++) {
            put_u16(p, (uint16_t)lens[i]);
            memcpy(p + 2, strs[i], (size_t)lens[i]);
            p += 2 + lens[i];
        }
    }
    *out_len = total;
    return buf;
}

/* Reads one u16-length-prefixed string from [*p, end) into dst (cap includes the NUL). */
static int read_string(const uint8_t **p, const uint8_t *end, char *dst, size_t cap)
{
    if (end - *p < 2)
        return -1;
    size_t n = get_u16(*p);
    *p += 2;
    /* Not UTF-8: such a string could not go into the JSON error body or log line that
     * quotes it (found by fuzz_cache_entry's invariant), so the entry is a miss. */
    if (n >= cap || (size_t)(end - *p) < n || memchr(*p, '\0', n) ||
        !utf8_valid((const char *)*p, n))
        return -1;
    memcpy(dst, *p, n);
    dst[n] = '\0';
    *p += n;
    return 0;
}

int pgw_cache_entry_decode(const uint8_t *buf, size_t len, pgw_cache_entry *out)
{
    if (!buf || !out || len < PGW_CACHE_ENTRY_HEADER_LEN)
        return -1;
    if (memcmp(buf, pgw_entry_magic, 4) != 0 || buf[4] != PGW_CACHE_ENTRY_VERSION)
        return -1;
    if (get_u16(buf + 6) != 0)
        return -1;
    uint32_t payload_len = get_u32(buf + 32);
    if (payload_len > PGW_CACHE_ENTRY_MAX_PAYLOAD ||
        len != PGW_CACHE_ENTRY_HEADER_LEN + (size_t)payload_len)
        return -1;

    pgw_cache_entry e;
    memset(&e, 0, sizeof e);
    e.fetched_at_ms = get_i64(buf + 8);
    e.fresh_until_ms = get_i64(buf + 16);
    e.stale_until_ms = get_i64(buf + 24);
    if (!times_ordered(e.fetched_at_ms, e.fresh_until_ms, e.stale_until_ms))
        return -1;

    const uint8_t *p = buf + PGW_CACHE_ENTRY_HEADER_LEN;
    const uint8_t *end = p + payload_len;
    if (buf[5] == PGW_CACHE_ENTRY_POSITIVE) {
        e.kind = PGW_CACHE_ENTRY_POSITIVE;
        e.job_pb = p;
        e.job_pb_len = payload_len;
    } else if (buf[5] == PGW_CACHE_ENTRY_NEGATIVE) {
        e.kind = PGW_CACHE_ENTRY_NEGATIVE;
        if (read_string(&p, end, e.error_code, sizeof e.error_code) != 0 ||
            read_string(&p, end, e.message, sizeof e.message) != 0 ||
            read_string(&p, end, e.request_id, sizeof e.request_id) != 0 || p != end)
            return -1;
    } else {
        return -1;
    }
    *out = e;
    return 0;
}

int pgw_cache_entry_is_fresh(const pgw_cache_entry *entry, int64_t now_ms)
{
    return now_ms < entry->fresh_until_ms;
}

int pgw_cache_entry_is_stale_usable(const pgw_cache_entry *entry, int64_t now_ms)
{
    return now_ms >= entry->fresh_until_ms && now_ms < entry->stale_until_ms;
}

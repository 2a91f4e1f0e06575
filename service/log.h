/* Structured logs: one JSON object per line on stdout, with level, time (RFC 3339, UTC, ms),
 * msg and the caller's fields. Thread-safe: each line is written with one locked write.
 *
 * Never pass a secret as a field: nothing here can tell a secret from any other string. */
#ifndef PGW_LOG_H
#define PGW_LOG_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

typedef enum pgw_log_level {
    PGW_LOG_DEBUG = 0,
    PGW_LOG_INFO,
    PGW_LOG_WARN,
    PGW_LOG_ERROR,
} pgw_log_level;

/* Sets the minimum level written. Returns 0, or -1 for an unknown name. */
int pgw_log_set_level_name(const char *name);

/* Nonzero when a line at this level would be written (to skip building fields). */
int pgw_log_enabled(pgw_log_level level);

/* Formats the current UTC time as RFC 3339 with milliseconds ("2026-01-02T03:04:05.678Z"),
 * the "time" field of every line. buf should hold 32 bytes. */
void pgw_log_time_now(char *buf, size_t len);

/* Writes one line. `fields` is an object or NULL; the function takes ownership of it (so
 * callers may pass json_pack(...) directly). */
void pgw_log(pgw_log_level level, const char *msg, json_t *fields);

/* Writes text and a newline to out as one locked, flushed line (log and audit lines share
 * stdout through it). Returns 0, or -1 when the line could not be written (disk full, closed
 * pipe): the line is dropped, nothing half-written is retried, the caller counts it. */
int pgw_log_write_line(FILE *out, const char *text);

#endif

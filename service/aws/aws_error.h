/* aws_error: parsing and classifying AWS JSON 1.1 error answers.
 *
 * AWS answers a failed call with HTTP 4xx/5xx, an optional `x-amzn-ErrorType` header and a body
 * such as {"__type":"com.amazon.coral.service#ResourceNotFoundException","message":"..."}. This
 * module turns that into an error code ("ResourceNotFoundException"), a bounded, sanitised
 * message, the gateway status code (DESIGN.md's table) and the retry flags of the SDKs'
 * "standard" retry mode. Pure: no I/O, no allocation beyond jansson's while parsing. */
#ifndef PGW_AWS_ERROR_H
#define PGW_AWS_ERROR_H

#include <stdbool.h>
#include <stddef.h>

#include "service/status.h"

#define PGW_AWS_ERROR_CODE_MAX    128           /* bytes of code kept, with the NUL */
#define PGW_AWS_ERROR_MESSAGE_MAX 512           /* bytes of message kept, with the NUL */
#define PGW_AWS_ERROR_BODY_MAX    (1024 * 1024) /* larger bodies are not parsed */

typedef struct pgw_aws_error {
    int http_status;                         /* as given */
    char code[PGW_AWS_ERROR_CODE_MAX];       /* normalised code, "" if none was found */
    char message[PGW_AWS_ERROR_MESSAGE_MAX]; /* AWS's message, "" if none; printable */
    pgw_code status;                         /* the gateway code this error maps to */
    bool retryable;                          /* HTTP 500/502/503/504 or a throttling code */
    bool throttling;                         /* a throttling code (or a bare HTTP 429) */
    bool credentials_problem; /* AWS rejected the gateway's own credentials/signature */
    bool expired_token;       /* the session token expired: refresh and retry once */
} pgw_aws_error;

/* Parses an AWS JSON 1.1 error answer into *out (fully overwritten). `error_type_header` is the
 * `x-amzn-ErrorType` header value or NULL; `body` may be NULL, empty, not JSON or not an object:
 * the error is then classified by the header and the HTTP status alone. The body's `__type`
 * (else `code`) wins over the header. Never fails. */
void pgw_aws_error_parse(int http_status, const char *error_type_header, const char *body,
                         size_t body_len, pgw_aws_error *out);

/* Normalises a raw error type as the SDKs do: everything from the first ':' on is dropped,
 * then everything up to and including the last '#', then surrounding blanks. Bytes outside
 * printable ASCII become '?'. Writes the NUL-terminated result to out (truncated to
 * out_len - 1) and returns its length. */
size_t pgw_aws_error_normalize_code(const char *raw, size_t raw_len, char *out, size_t out_len);

/* Fills status and the flags of *err from err->code and err->http_status. Called by
 * pgw_aws_error_parse; public so that callers classifying a code they got elsewhere (or tests)
 * use the same table. */
void pgw_aws_error_classify(pgw_aws_error *err);

/* True if `code` (normalised) is one of the SDKs' throttling error codes. */
bool pgw_aws_error_is_throttling_code(const char *code);

#endif

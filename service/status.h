/* The gateway's result codes, shared by every layer.
 *
 * The numbers are the canonical RPC status codes (the ones gRPC, Google APIs and Envoy use), so
 * the gRPC frontend passes them through unchanged, while lookup and the AWS client stay free of
 * any gRPC header. pgw_code_http_status() is the one table from code to HTTP status. */
#ifndef PGW_STATUS_H
#define PGW_STATUS_H

typedef enum pgw_code {
    PGW_OK = 0,
    PGW_CANCELLED = 1,
    PGW_UNKNOWN = 2,
    PGW_INVALID_ARGUMENT = 3,
    PGW_DEADLINE_EXCEEDED = 4,
    PGW_NOT_FOUND = 5,
    PGW_PERMISSION_DENIED = 7,
    PGW_RESOURCE_EXHAUSTED = 8,
    PGW_UNIMPLEMENTED = 12,
    PGW_INTERNAL = 13,
    PGW_UNAVAILABLE = 14,
    PGW_UNAUTHENTICATED = 16,
} pgw_code;

/* The HTTP status that matches a code (404, 400, 503, 403, 401, 429, 504, ...). */
int pgw_code_http_status(pgw_code code);

/* The canonical upper-snake name ("NOT_FOUND"); never NULL. */
const char *pgw_code_name(pgw_code code);

#endif

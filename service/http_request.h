/* http_request: what the HTTP frontend reads out of a request, apart from the server, so that
 * it can be tested and fuzzed without a socket: the route of a path, the AWS JSON 1.1 body of
 * POST /, the ARN in GET /v1/batch-inference-jobs/{ARN} and its ?watch= parameter.
 *
 * Nothing here checks the ARN itself: the frontend hands the bytes (with their length, NULs
 * and all) to lookup, whose pgw_arn_parse() is the one ARN check every frontend shares. Pure:
 * no I/O; JSON is jansson's, URL decoding libevent's. */
#ifndef PGW_HTTP_REQUEST_H
#define PGW_HTTP_REQUEST_H

#include <jansson.h>
#include <stddef.h>

#define PGW_HTTP_REST_PREFIX "/v1/batch-inference-jobs/"

typedef enum pgw_http_route {
    PGW_HTTP_ROUTE_NOT_FOUND = 0,
    PGW_HTTP_ROUTE_AWS,     /* "/" */
    PGW_HTTP_ROUTE_REST,    /* PGW_HTTP_REST_PREFIX "<something>" */
    PGW_HTTP_ROUTE_HEALTHZ, /* "/healthz" */
    PGW_HTTP_ROUTE_READYZ,  /* "/readyz" */
    PGW_HTTP_ROUTE_METRICS, /* "/metrics" */
} pgw_http_route;

/* The route of a request path (already split from its query by the URI parser; NULL or ""
 * counts as "/"). For PGW_HTTP_ROUTE_REST, *rest (if rest is not NULL) points into path at
 * what follows the prefix, still percent-encoded and never empty. */
pgw_http_route pgw_http_route_of(const char *path, const char **rest);

/* The decoded ARN of a REST path's rest (see pgw_http_route_of): a malloc'd copy, NUL-
 * terminated, that the caller frees, its length in *len. It may hold NUL bytes (from "%00"),
 * which only the length shows. NULL when out of memory. */
char *pgw_http_rest_arn(const char *rest, size_t *len);

/* The watch parameter of a REST request's query string (NULL or "" when there is none):
 * 1 for watch=true or watch=1, 0 for watch=false, watch=0, no watch parameter or a query
 * that does not parse, -1 for a watch parameter that is none of these. */
int pgw_http_watch_param(const char *query);

/* A parsed POST / body. */
typedef struct pgw_http_aws_request {
    json_t *root;         /* owned: pgw_http_aws_request_cleanup releases it */
    const char *arn;      /* batchInferenceJobArn, borrowed from root; NULL on error */
    size_t arn_len;       /* its length in bytes */
    const char *problem;  /* static message for the caller when arn is NULL */
    const char *aws_type; /* the AWS error type to answer with when arn is NULL */
} pgw_http_aws_request;

/* Parses the `len` bytes at body as the JSON 1.1 DescribeBatchInferenceJob request,
 * {"batchInferenceJobArn": "..."}; other members are ignored, as AWS does. Returns 0 with
 * out->arn set; or -1 with out->problem and out->aws_type (SerializationException for a body
 * that is not a JSON object or an ARN that is not a string, InvalidInputException for a
 * missing one). JSON strings are jansson's: valid UTF-8, and a \u0000 is refused (no
 * JSON_ALLOW_NUL). Either way release with pgw_http_aws_request_cleanup(). */
int pgw_http_aws_request_parse(pgw_http_aws_request *out, const char *body, size_t len);

void pgw_http_aws_request_cleanup(pgw_http_aws_request *req);

#endif

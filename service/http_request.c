/* http_request: what the HTTP frontend reads out of a request. See http_request.h. */
#include "service/http_request.h"

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <string.h>

pgw_http_route pgw_http_route_of(const char *path, const char **rest)
{
    if (rest)
        *rest = NULL;
    if (!path || !*path || strcmp(path, "/") == 0)
        return PGW_HTTP_ROUTE_AWS;
    size_t n = strlen(PGW_HTTP_REST_PREFIX);
    if (strncmp(path, PGW_HTTP_REST_PREFIX, n) == 0 && path[n] != '\0') {
        if (rest)
            *rest = path + n;
        return PGW_HTTP_ROUTE_REST;
    }
    if (strcmp(path, "/healthz") == 0)
        return PGW_HTTP_ROUTE_HEALTHZ;
    if (strcmp(path, "/readyz") == 0)
        return PGW_HTTP_ROUTE_READYZ;
    if (strcmp(path, "/metrics") == 0)
        return PGW_HTTP_ROUTE_METRICS;
    return PGW_HTTP_ROUTE_NOT_FOUND;
}

char *pgw_http_rest_arn(const char *rest, size_t *len)
{
    size_t n = 0;
    /* decode_plus 0: in a path "+" is a plus sign, not a space. */
    char *arn = evhttp_uridecode(rest ? rest : "", 0, &n);
    *len = arn ? n : 0;
    return arn;
}

int pgw_http_watch_param(const char *query)
{
    if (!query || !*query)
        return 0;
    struct evkeyvalq params;
    memset(&params, 0, sizeof(params)); /* evhttp_parse_query_str initializes it */
    if (evhttp_parse_query_str(query, &params) != 0) {
        evhttp_clear_headers(&params);
        return 0;
    }
    const char *v = evhttp_find_header(&params, "watch");
    int rc = !v                                               ? 0
             : strcmp(v, "true") == 0 || strcmp(v, "1") == 0  ? 1
             : strcmp(v, "false") == 0 || strcmp(v, "0") == 0 ? 0
                                                              : -1;
    evhttp_clear_headers(&params);
    return rc;
}

int pgw_http_aws_request_parse(pgw_http_aws_request *out, const char *body, size_t len)
{
    memset(out, 0, sizeof(*out));
    json_error_t jerr;
    /* The parser's error text may quote the body: it is not passed on. */
    out->root = json_loadb(body ? body : "", body ? len : 0, 0, &jerr);
    json_t *arn = out->root ? json_object_get(out->root, "batchInferenceJobArn") : NULL;
    out->aws_type = "SerializationException";
    if (!out->root)
        out->problem = "the request body is not valid JSON";
    else if (!json_is_object(out->root))
        out->problem = "the request body must be a JSON object";
    else if (!arn || json_is_null(arn))
        out->problem = "batchInferenceJobArn is required", out->aws_type = "InvalidInputException";
    else if (!json_is_string(arn))
        out->problem = "batchInferenceJobArn must be a string";
    if (out->problem)
        return -1;
    out->aws_type = NULL;
    out->arn = json_string_value(arn);
    out->arn_len = json_string_length(arn);
    return 0;
}

void pgw_http_aws_request_cleanup(pgw_http_aws_request *req)
{
    json_decref(req->root);
    memset(req, 0, sizeof(*req));
}

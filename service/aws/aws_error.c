/* aws_error: parsing and classifying AWS JSON 1.1 error answers. See aws_error.h. */
#include "service/aws/aws_error.h"

#include <jansson.h>
#include <string.h>

/* botocore retries/standard.py and aws-sdk-go-v2 aws/retry: the codes that mean "slow down". */
static const char *const throttling_codes[] = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
};

/* AWS rejected the gateway's own credentials or signature: the caller did nothing wrong, the
 * gateway cannot serve right now (UNAVAILABLE). */
static const char *const credentials_codes[] = {
    "UnrecognizedClientException", "InvalidSignatureException",
    "ExpiredTokenException",       "ExpiredToken",
    "InvalidClientTokenId",        "MissingAuthenticationToken",
};

static bool in_list(const char *code, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(code, list[i]) == 0)
            return true;
    }
    return false;
}

bool pgw_aws_error_is_throttling_code(const char *code)
{
    return code != NULL &&
           in_list(code, throttling_codes, sizeof(throttling_codes) / sizeof(throttling_codes[0]));
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

size_t pgw_aws_error_normalize_code(const char *raw, size_t raw_len, char *out, size_t out_len)
{
    if (out == NULL || out_len == 0)
        return 0;
    out[0] = '\0';
    if (raw == NULL)
        return 0;
    /* ":http://internal.amazon.com/coral/..." and the like: drop from the first ':'. Cutting
     * there first means a '#' inside that URL cannot confuse the namespace strip below. */
    const char *colon = memchr(raw, ':', raw_len);
    size_t n = colon ? (size_t)(colon - raw) : raw_len;
    /* "com.amazon.coral.service#ResourceNotFoundException": keep what follows the last '#'. */
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (raw[i] == '#')
            start = i + 1;
    }
    while (start < n && is_blank(raw[start]))
        start++;
    while (n > start && is_blank(raw[n - 1]))
        n--;
    /* Cut to the buffer first, then trim again: a cut may end on a blank (found by
     * fuzz_aws_error), and "Code " would then neither match a known code nor normalise to
     * itself. */
    if (n - start > out_len - 1)
        n = start + out_len - 1;
    while (n > start && is_blank(raw[n - 1]))
        n--;
    size_t o = 0;
    for (size_t i = start; i < n && o + 1 < out_len; i++) {
        unsigned char c = (unsigned char)raw[i];
        out[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    out[o] = '\0';
    return o;
}

/* Copies a UTF-8 message into dst, bounded: ASCII and C1 control characters become spaces (a
 * message ends up in logs and status lines), and a message too long for dst is cut at a
 * character boundary and ends in "...". */
static void copy_message(const char *src, size_t len, char *dst, size_t dst_len)
{
    size_t o = 0;
    int truncated = 0;
    for (size_t i = 0; i < len; i++) {
        if (o + 1 >= dst_len) {
            truncated = 1;
            break;
        }
        unsigned char c = (unsigned char)src[i];
        if (c < 0x20 || c == 0x7f) {
            dst[o++] = ' ';
        } else if (c == 0xc2 && i + 1 < len && (unsigned char)src[i + 1] >= 0x80 &&
                   (unsigned char)src[i + 1] <= 0x9f) {
            dst[o++] = ' '; /* U+0080..U+009F */
            i++;
        } else {
            dst[o++] = (char)c;
        }
    }
    if (truncated) {
        o = dst_len - 4 < o ? dst_len - 4 : o;
        /* Step back over UTF-8 continuation bytes so no character is split. */
        while (o > 0 && ((unsigned char)dst[o] & 0xc0) == 0x80)
            o--;
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
}

void pgw_aws_error_classify(pgw_aws_error *err)
{
    const char *code = err->code;
    int st = err->http_status;
    bool server = st == 500 || st == 502 || st == 503 || st == 504;

    err->throttling = pgw_aws_error_is_throttling_code(code) || (code[0] == '\0' && st == 429);
    err->credentials_problem =
        in_list(code, credentials_codes, sizeof(credentials_codes) / sizeof(credentials_codes[0]));
    err->expired_token =
        strcmp(code, "ExpiredTokenException") == 0 || strcmp(code, "ExpiredToken") == 0;
    err->retryable = server || err->throttling;

    if (strcmp(code, "InvalidInputException") == 0)
        err->status = PGW_INVALID_ARGUMENT;
    else if (strcmp(code, "ResourceNotFoundException") == 0)
        err->status = PGW_NOT_FOUND;
    else if (strcmp(code, "AccessDeniedException") == 0)
        err->status = PGW_PERMISSION_DENIED;
    else if (err->throttling || err->credentials_problem || st >= 500)
        err->status = PGW_UNAVAILABLE;
    else
        err->status = PGW_INTERNAL;
}

/* The first of `names` that is a string member of obj, or NULL. */
static json_t *string_member(json_t *obj, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_object_get(obj, names[i]);
        if (json_is_string(v))
            return v;
    }
    return NULL;
}

void pgw_aws_error_parse(int http_status, const char *error_type_header, const char *body,
                         size_t body_len, pgw_aws_error *out)
{
    static const char *const code_names[] = {"__type", "code"};
    static const char *const message_names[] = {"message", "Message"};

    memset(out, 0, sizeof(*out));
    out->http_status = http_status;

    json_t *root = NULL;
    if (body != NULL && body_len > 0 && body_len <= PGW_AWS_ERROR_BODY_MAX) {
        json_error_t jerr;
        /* JSON_ALLOW_NUL: a \u0000 in a message must not cost us the error code; the copies
         * below are length-based and scrub it. */
        root = json_loadb(body, body_len, JSON_ALLOW_NUL, &jerr);
        if (root != NULL && !json_is_object(root)) {
            json_decref(root);
            root = NULL;
        }
    }
    if (root != NULL) {
        json_t *code = string_member(root, code_names, 2);
        if (code != NULL)
            pgw_aws_error_normalize_code(json_string_value(code), json_string_length(code),
                                         out->code, sizeof(out->code));
        json_t *msg = string_member(root, message_names, 2);
        if (msg != NULL)
            copy_message(json_string_value(msg), json_string_length(msg), out->message,
                         sizeof(out->message));
        json_decref(root);
    }
    if (out->code[0] == '\0' && error_type_header != NULL)
        pgw_aws_error_normalize_code(error_type_header, strlen(error_type_header), out->code,
                                     sizeof(out->code));
    pgw_aws_error_classify(out);
}

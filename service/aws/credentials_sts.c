#include "service/aws/credentials_sts.h"

#include <curl/curl.h>
#include <expat.h>
#include <malloc.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/aws/arn.h"
#include "service/aws/credentials_source.h"
#include "service/aws/sigv4.h"
#include "service/clock.h"
#include "service/text.h"

int pgw_sts_endpoint(const char *region, char *url, size_t url_len)
{
    const char *override = pgw_credentials_getenv("AWS_ENDPOINT_URL_STS");
    if (!override)
        override = pgw_credentials_getenv("AWS_ENDPOINT_URL");
    int n;
    if (override)
        n = snprintf(url, url_len, "%s", override);
    else if (region && *region && !pgw_arn_region_valid(region, strlen(region)))
        /* The region becomes part of the host name (from AWS_REGION or a profile's "region"):
         * "evil.example/x#" would send the signed call elsewhere (found by fuzz_url). */
        return -1;
    else if (!region || !*region)
        n = snprintf(url, url_len, "https://sts.amazonaws.com/");
    else
        n = snprintf(url, url_len, "https://sts.%s.amazonaws.com%s/", region,
                     strncmp(region, "cn-", 3) == 0 ? ".cn" : "");
    return (n > 0 && (size_t)n < url_len) ? 0 : -1;
}

const char *pgw_sts_signing_region(const char *region)
{
    return (region && *region) ? region : "us-east-1";
}

void pgw_sts_default_session_name(char *out, size_t out_len)
{
    snprintf(out, out_len, "personalize-gateway-%lld", (long long)pgw_now_wall_ms());
}

/* --- the XML answer ---
 *
 * Parsed with expat, as a stream: only the first <Error> (any answer but a 200) or the first
 * <Credentials> (a 200) element is looked for, within the first STS_MAX_DEPTH levels, and the
 * full text of its named direct children is kept. Element names are compared by their local
 * part (namespace processing on: "uri\x01local"). A DOCTYPE refuses the document: STS sends
 * none, and without one no entity can be declared, so none is expanded or fetched. expat's
 * own buffers hold the answer's bytes (the secrets): its allocator wipes every block it frees. */

#define STS_MAX_DEPTH 16
#define STS_NS_SEP    '\x01'

enum { F_CODE, F_MESSAGE, F_AKID, F_SECRET, F_TOKEN, F_EXPIRATION, F_COUNT };
static const char *const FIELD_NAMES[F_COUNT] = {
    "Code", "Message", "AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration",
};

typedef struct sts_text {
    char *s; /* NUL-terminated, or NULL when the element never appeared */
    size_t len, cap;
} sts_text;

typedef struct sts_sax {
    XML_Parser parser;
    const char *container; /* "Error" or "Credentials" */
    int first_field, n_fields;
    int depth;           /* of the element being parsed; the root is 1 */
    int container_depth; /* 0: not entered yet; -1: the first one is over */
    int capturing;       /* the field whose text is being read, or -1 */
    int capture_depth;
    int failed; /* out of memory, or a DOCTYPE */
    sts_text fields[F_COUNT];
} sts_sax;

static void *wiping_malloc(size_t n)
{
    return malloc(n);
}

static void wiping_free(void *p)
{
    if (p) {
        OPENSSL_cleanse(p, malloc_usable_size(p));
        free(p);
    }
}

/* Never realloc: a moved block would leave the old copy unwiped. */
static void *wiping_realloc(void *p, size_t n)
{
    if (!p)
        return malloc(n);
    void *q = malloc(n);
    if (!q)
        return NULL;
    size_t old = malloc_usable_size(p);
    memcpy(q, p, old < n ? old : n);
    wiping_free(p);
    return q;
}

static const XML_Memory_Handling_Suite WIPING_MEMORY = {wiping_malloc, wiping_realloc, wiping_free};

static const char *local_name(const XML_Char *name)
{
    const char *sep = strrchr(name, STS_NS_SEP);
    return sep ? sep + 1 : name;
}

static void sax_stop(sts_sax *x)
{
    x->failed = 1;
    XML_StopParser(x->parser, XML_FALSE);
}

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
    sts_sax *x = ud;
    x->depth++;
    if (x->capturing >= 0)
        return; /* an element inside a field: its text is part of the field's */
    const char *local = local_name(name);
    if (x->container_depth == 0 && x->depth <= STS_MAX_DEPTH && strcmp(local, x->container) == 0) {
        x->container_depth = x->depth;
    } else if (x->container_depth > 0 && x->depth == x->container_depth + 1) {
        for (int f = x->first_field; f < x->first_field + x->n_fields; f++)
            if (!x->fields[f].s && strcmp(local, FIELD_NAMES[f]) == 0) {
                x->fields[f].s = calloc(1, 1);
                if (!x->fields[f].s) {
                    sax_stop(x);
                    return;
                }
                x->capturing = f;
                x->capture_depth = x->depth;
                return;
            }
    }
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
    sts_sax *x = ud;
    if (x->capturing >= 0 && x->depth == x->capture_depth)
        x->capturing = -1;
    if (x->container_depth > 0 && x->depth == x->container_depth)
        x->container_depth = -1;
    x->depth--;
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
    sts_sax *x = ud;
    if (x->capturing < 0 || len <= 0)
        return;
    sts_text *t = &x->fields[x->capturing];
    if (t->len + (size_t)len + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 64;
        while (cap < t->len + (size_t)len + 1)
            cap *= 2;
        char *grown = wiping_realloc(t->s, cap);
        if (!grown) {
            sax_stop(x);
            return;
        }
        t->s = grown;
        t->cap = cap;
    }
    memcpy(t->s + t->len, s, (size_t)len);
    t->len += (size_t)len;
    t->s[t->len] = '\0';
}

static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                               const XML_Char *pubid, int has_internal_subset)
{
    sax_stop(ud);
}

/* Parses body, keeping the fields of the first `container`. Returns 0 when the document is
 * well-formed XML without a DOCTYPE, else -1. */
static int sts_sax_parse(sts_sax *x, const char *body, size_t len)
{
    if (len == 0)
        return -1;
    static const XML_Char ns_sep[] = {STS_NS_SEP, 0};
    x->parser = XML_ParserCreate_MM(NULL, &WIPING_MEMORY, ns_sep);
    if (!x->parser)
        return -1;
    XML_SetUserData(x->parser, x);
    XML_SetElementHandler(x->parser, on_start, on_end);
    XML_SetCharacterDataHandler(x->parser, on_text);
    XML_SetStartDoctypeDeclHandler(x->parser, on_doctype);
    int ok = XML_Parse(x->parser, body, (int)len, XML_TRUE) == XML_STATUS_OK && !x->failed;
    XML_ParserFree(x->parser);
    x->parser = NULL;
    return ok ? 0 : -1;
}

static void sts_sax_free(sts_sax *x)
{
    for (int f = 0; f < F_COUNT; f++)
        wiping_free(x->fields[f].s);
}

int pgw_sts_parse_answer(long http_status, const char *body, size_t len, const char *source,
                         pgw_credentials **out, char *err, size_t err_len)
{
    *out = NULL;
    if (len > PGW_CREDENTIALS_MAX_ANSWER || len > (size_t)INT32_MAX) {
        snprintf(err, err_len, "STS answered HTTP %ld with an oversized body", http_status);
        return -1;
    }
    int ok_status = http_status == 200;
    sts_sax x = {
        .container = ok_status ? "Credentials" : "Error",
        .first_field = ok_status ? F_AKID : F_CODE,
        .n_fields = ok_status ? 4 : 2,
        .capturing = -1,
    };
    int rc = -1;
    if (sts_sax_parse(&x, body, len) != 0) {
        snprintf(err, err_len, "STS answered HTTP %ld without a readable XML body", http_status);
    } else if (!ok_status) {
        const char *code = x.fields[F_CODE].s, *msg = x.fields[F_MESSAGE].s;
        /* Quoted: the answer's text may hold control characters, and a cut could split a
         * character, which the JSON log line quoting this message would refuse. */
        char qc[PGW_TEXT_QUOTE_SIZE(64)], qm[PGW_TEXT_QUOTE_SIZE(200)];
        snprintf(err, err_len, "STS answered HTTP %ld: %s: %s", http_status,
                 code ? pgw_text_quote_str(code, 64, qc, sizeof(qc)) : "UnknownError",
                 msg ? pgw_text_quote_str(msg, 200, qm, sizeof(qm)) : "no message");
    } else {
        const char *akid = x.fields[F_AKID].s, *secret = x.fields[F_SECRET].s,
                   *token = x.fields[F_TOKEN].s, *exp = x.fields[F_EXPIRATION].s;
        int64_t expires_ms = 0;
        if (!akid || !secret || !token || !exp) {
            snprintf(err, err_len,
                     "STS answer lacks Credentials (AccessKeyId, SecretAccessKey, "
                     "SessionToken, Expiration)");
        } else if (pgw_credentials_parse_time(exp, &expires_ms) != 0) {
            snprintf(err, err_len, "STS answer's Expiration is not an ISO 8601 time");
        } else {
            *out = pgw_credentials_new(akid, secret, token, expires_ms, source);
            if (*out)
                rc = 0;
            else
                snprintf(err, err_len,
                         "STS answer's credentials are empty or hold characters a request "
                         "header cannot carry");
        }
    }
    sts_sax_free(&x);
    return rc;
}

/* --- the call --- */

struct pgw_sts_call {
    pgw_http_transfer *transfer;
    pgw_credentials_cb cb;
    void *user_data;
    char source[32];
};

/* Appends "&name=<form-encoded value>" to the body. */
static int append_param(char **body, size_t *len, const char *name, const char *value)
{
    char *esc = curl_easy_escape(NULL, value, 0);
    if (!esc)
        return -1;
    size_t need = *len + 1 + strlen(name) + 1 + strlen(esc) + 1;
    char *grown = malloc(need);
    if (!grown) {
        OPENSSL_cleanse(esc, strlen(esc));
        curl_free(esc);
        return -1;
    }
    int n = snprintf(grown, need, "%s&%s=%s", *body, name, esc);
    OPENSSL_cleanse(esc, strlen(esc));
    curl_free(esc);
    pgw_credentials_secret_free(*body);
    *body = grown;
    *len = (size_t)n;
    return 0;
}

static void on_sts_response(const pgw_http_response *resp, void *user_data)
{
    pgw_sts_call *call = user_data;
    char err[400];
    pgw_credentials *creds = NULL;
    if (resp->transport_error) {
        snprintf(err, sizeof(err), "STS unreachable: %.200s",
                 resp->error ? resp->error : "transport error");
    } else {
        pgw_sts_parse_answer(resp->status, resp->body, resp->body_len, call->source, &creds, err,
                             sizeof(err));
        pgw_credentials_wipe_body(resp->body, resp->body_len);
    }
    call->cb(creds, creds ? NULL : err, call->user_data);
    pgw_credentials_unref(creds);
    free(call);
}

void pgw_sts_call_cancel(pgw_sts_call *call)
{
    if (!call)
        return;
    pgw_http_cancel(call->transfer);
    free(call);
}

pgw_sts_call *pgw_sts_call_start(const pgw_sts_call_options *o, pgw_credentials_cb cb,
                                 void *user_data, char *err, size_t err_len)
{
    int assume_role = strcmp(o->action, "AssumeRole") == 0;
    if (!o->role_arn || !*o->role_arn || !o->session_name || !*o->session_name ||
        (assume_role ? !o->signing : !o->web_identity_token)) {
        snprintf(err, err_len, "STS %s: missing role ARN, session name or %s", o->action,
                 assume_role ? "source credentials" : "web identity token");
        return NULL;
    }
    char scheme[16], host[300], path[256];
    if (pgw_credentials_url_parts(o->url, scheme, sizeof(scheme), host, sizeof(host), path,
                                  sizeof(path), NULL, 0) != 0) {
        snprintf(err, err_len, "STS endpoint is not a valid URL");
        return NULL;
    }
    char *body = malloc(64);
    size_t body_len = 0;
    if (body)
        body_len = (size_t)snprintf(body, 64, "Action=%s&Version=2011-06-15", o->action);
    int ok = body != NULL;
    ok = ok && append_param(&body, &body_len, "RoleArn", o->role_arn) == 0;
    ok = ok && append_param(&body, &body_len, "RoleSessionName", o->session_name) == 0;
    if (ok && o->web_identity_token && !assume_role)
        ok = append_param(&body, &body_len, "WebIdentityToken", o->web_identity_token) == 0;
    if (ok && assume_role && o->external_id && *o->external_id)
        ok = append_param(&body, &body_len, "ExternalId", o->external_id) == 0;
    if (ok && o->duration_seconds > 0) {
        char d[16];
        snprintf(d, sizeof(d), "%d", o->duration_seconds);
        ok = append_param(&body, &body_len, "DurationSeconds", d) == 0;
    }
    pgw_sts_call *call = ok ? calloc(1, sizeof(*call)) : NULL;
    if (!call) {
        pgw_credentials_secret_free(body);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    call->cb = cb;
    call->user_data = user_data;
    snprintf(call->source, sizeof(call->source), "%s", o->source ? o->source : "sts");

    static const char content_type[] = "application/x-www-form-urlencoded; charset=utf-8";
    char host_line[320], ctype_line[80];
    snprintf(host_line, sizeof(host_line), "Host: %s", host);
    snprintf(ctype_line, sizeof(ctype_line), "Content-Type: %s", content_type);
    const char *headers[4 + PGW_SIGV4_MAX_OUT_HDRS + 1] = {host_line, ctype_line,
                                                           "Accept: text/xml"};
    size_t nh = 3;
    char *signed_lines[PGW_SIGV4_MAX_OUT_HDRS] = {0};
    pgw_sigv4_output sout = {0};
    pgw_sigv4_signer *signer = NULL;
    if (assume_role) {
        const pgw_sigv4_header to_sign[] = {{"Host", host}, {"Content-Type", content_type}};
        pgw_sigv4_request sreq = {
            .method = "POST",
            .path = path,
            .headers = to_sign,
            .n_headers = 2,
            .body = body,
            .body_len = body_len,
        };
        pgw_sigv4_credentials sc = {o->signing->access_key_id, o->signing->secret_access_key,
                                    o->signing->session_token};
        pgw_sigv4_context ctx = {
            .credentials = &sc,
            .region = pgw_sts_signing_region(o->region),
            .service = "sts",
            .now = (time_t)(pgw_now_wall_ms() / 1000),
        };
        signer = pgw_sigv4_signer_new();
        ok = signer && pgw_sigv4_sign(signer, &sreq, &ctx, &sout) == 0;
        if (!ok)
            snprintf(err, err_len, "cannot sign the STS request: %s",
                     signer ? pgw_sigv4_signer_errstr(signer) : "out of memory");
        for (size_t i = 0; ok && i < sout.n_headers; i++) {
            size_t need = strlen(sout.headers[i].name) + 2 + strlen(sout.headers[i].value) + 1;
            signed_lines[i] = malloc(need);
            ok = signed_lines[i] != NULL;
            if (ok) {
                snprintf(signed_lines[i], need, "%s: %s", sout.headers[i].name,
                         sout.headers[i].value);
                headers[nh++] = signed_lines[i];
            } else {
                snprintf(err, err_len, "out of memory");
            }
        }
    }
    if (ok) {
        pgw_http_request req = {
            .method = "POST",
            .url = o->url,
            .headers = headers,
            .body = body,
            .body_len = body_len,
            .timeout_ms = PGW_STS_TIMEOUT_MS,
        };
        call->transfer = pgw_http_start(o->http, &req, on_sts_response, call);
        if (!call->transfer) {
            snprintf(err, err_len, "cannot start the STS request");
            ok = 0;
        }
    }
    for (size_t i = 0; i < PGW_SIGV4_MAX_OUT_HDRS; i++)
        pgw_credentials_secret_free(signed_lines[i]);
    pgw_sigv4_output_cleanup(&sout);
    pgw_sigv4_signer_free(signer);
    pgw_credentials_secret_free(body); /* it held the web identity token */
    if (!ok) {
        free(call);
        return NULL;
    }
    return call;
}

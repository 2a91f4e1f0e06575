#include "service/aws/credentials_imds.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/aws/credentials_source.h"
#include "service/clock.h"

#define CREDS_PATH "/latest/meta-data/iam/security-credentials/"
/* Renew the session token this long before IMDS would reject it. */
#define TOKEN_RENEW_MARGIN_MS 60000
#define MAX_TOKEN             PGW_IMDS_MAX_TOKEN
#define MAX_ROLE              PGW_IMDS_MAX_ROLE

typedef enum imds_step { STEP_TOKEN, STEP_ROLE, STEP_CREDENTIALS } imds_step;

typedef struct imds_provider {
    pgw_credentials_provider base;
    pgw_http_client *http;
    char endpoint[512]; /* without a trailing '/' */
    char token[MAX_TOKEN + 1];
    int64_t token_expires_mono_ms;
    char role[MAX_ROLE + 1];
    imds_step step;
    int token_retried; /* a 401 with a kept token: fetched a new one once */
    pgw_http_transfer *transfer;
    pgw_credentials_pending pending;
} imds_provider;

static void step_start(imds_provider *m);

int pgw_imds_parse_token(const char *body, size_t len, char *out, size_t out_len)
{
    if (out_len)
        out[0] = '\0';
    if (!body || len == 0 || len > PGW_IMDS_MAX_TOKEN || len >= out_len)
        return -1;
    /* It goes back in X-aws-ec2-metadata-token: no NUL to cut it, no CR/LF to add a header. */
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)body[i] <= 0x20 || (unsigned char)body[i] >= 0x7f)
            return -1;
    memcpy(out, body, len);
    out[len] = '\0';
    return 0;
}

static int role_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("+=,.@_-", c) != NULL;
}

int pgw_imds_parse_role(const char *body, size_t len, char *out, size_t out_len)
{
    if (out_len)
        out[0] = '\0';
    if (!body)
        return -1;
    /* One role per instance profile; take the first line. */
    size_t n = 0;
    while (n < len && body[n] != '\r' && body[n] != '\n')
        n++;
    while (n > 0 && (body[n - 1] == ' ' || body[n - 1] == '\t'))
        n--;
    if (n == 0 || n > PGW_IMDS_MAX_ROLE || n >= out_len)
        return -1;
    /* The name becomes a path segment: only IAM's characters, and no dot segment. */
    for (size_t i = 0; i < n; i++)
        if (body[i] == '\0' || !role_char(body[i]))
            return -1;
    if ((n == 1 && body[0] == '.') || (n == 2 && body[0] == '.' && body[1] == '.'))
        return -1;
    memcpy(out, body, n);
    out[n] = '\0';
    return 0;
}

static void finish(imds_provider *m, pgw_credentials *creds, const char *error)
{
    char msg[400] = "";
    if (!creds)
        snprintf(msg, sizeof(msg), "instance metadata (IMDSv2): %s", error);
    pgw_credentials_pending_finish(&m->pending, creds, msg);
}

static void drop_token(imds_provider *m)
{
    OPENSSL_cleanse(m->token, sizeof(m->token));
    m->token_expires_mono_ms = 0;
}

static void on_response(const pgw_http_response *resp, void *user_data)
{
    imds_provider *m = user_data;
    m->transfer = NULL;
    char err[300] = "";
    if (resp->transport_error) {
        snprintf(err, sizeof(err), "%s: %.200s", resp->timed_out ? "timed out" : "unreachable",
                 resp->error ? resp->error : "");
        finish(m, NULL, err);
        return;
    }
    if (resp->status == 401 && m->step != STEP_TOKEN && !m->token_retried) {
        /* The kept session token expired or IMDS restarted: get a new one, once. */
        m->token_retried = 1;
        drop_token(m);
        m->step = STEP_TOKEN;
        step_start(m);
        return;
    }
    if (resp->status != 200) {
        pgw_credentials_wipe_body(resp->body, resp->body_len);
        snprintf(err, sizeof(err), "HTTP %ld on the %s request", resp->status,
                 m->step == STEP_TOKEN  ? "session token"
                 : m->step == STEP_ROLE ? "role name"
                                        : "credentials");
        finish(m, NULL, err);
        return;
    }
    switch (m->step) {
    case STEP_TOKEN: {
        int rc = pgw_imds_parse_token(resp->body, resp->body_len, m->token, sizeof(m->token));
        pgw_credentials_wipe_body(resp->body, resp->body_len);
        if (rc != 0) {
            finish(m, NULL, "the session token answer is empty, too long or malformed");
            return;
        }
        m->token_expires_mono_ms =
            pgw_now_mono_ms() + PGW_IMDS_TOKEN_TTL_S * 1000LL - TOKEN_RENEW_MARGIN_MS;
        m->step = STEP_ROLE;
        step_start(m);
        return;
    }
    case STEP_ROLE:
        if (pgw_imds_parse_role(resp->body, resp->body_len, m->role, sizeof(m->role)) != 0) {
            finish(m, NULL, "no usable IAM role name (is an instance profile attached?)");
            return;
        }
        m->step = STEP_CREDENTIALS;
        step_start(m);
        return;
    case STEP_CREDENTIALS: {
        pgw_credentials *creds =
            pgw_credentials_from_json(resp->body, resp->body_len, "imds", err, sizeof(err));
        pgw_credentials_wipe_body(resp->body, resp->body_len);
        finish(m, creds, err);
        pgw_credentials_unref(creds);
        return;
    }
    }
}

static void step_start(imds_provider *m)
{
    char url[700];
    char token_line[MAX_TOKEN + 40] = "";
    const char *headers[3] = {0};
    const char *method = "GET";
    if (m->step == STEP_TOKEN) {
        snprintf(url, sizeof(url), "%s/latest/api/token", m->endpoint);
        method = "PUT";
        headers[0] = "X-aws-ec2-metadata-token-ttl-seconds: 21600";
    } else {
        if (m->step == STEP_ROLE)
            snprintf(url, sizeof(url), "%s%s", m->endpoint, CREDS_PATH);
        else
            snprintf(url, sizeof(url), "%s%s%s", m->endpoint, CREDS_PATH, m->role);
        snprintf(token_line, sizeof(token_line), "X-aws-ec2-metadata-token: %s", m->token);
        headers[0] = token_line;
    }
    pgw_http_request req = {
        .method = method,
        .url = url,
        .headers = headers,
        .body = m->step == STEP_TOKEN ? "" : NULL,
        .body_len = 0,
        .timeout_ms = PGW_IMDS_TIMEOUT_MS,
    };
    m->transfer = pgw_http_start(m->http, &req, on_response, m);
    OPENSSL_cleanse(token_line, sizeof(token_line));
    if (!m->transfer)
        finish(m, NULL, "cannot start the request");
}

static int imds_get(pgw_credentials_provider *p, pgw_credentials_cb cb, void *user_data)
{
    imds_provider *m = (imds_provider *)p;
    if (m->pending.busy)
        return -1;
    m->pending = (pgw_credentials_pending){cb, user_data, 1};
    m->token_retried = 0;
    if (m->token[0] && pgw_now_mono_ms() < m->token_expires_mono_ms) {
        m->step = STEP_ROLE;
    } else {
        drop_token(m);
        m->step = STEP_TOKEN;
    }
    step_start(m);
    return 0;
}

static void imds_destroy(pgw_credentials_provider *p)
{
    imds_provider *m = (imds_provider *)p;
    if (m->transfer)
        pgw_http_cancel(m->transfer);
    drop_token(m);
    free(m);
}

static const pgw_credentials_provider_vtable imds_vtable = {imds_get, NULL, imds_destroy};

pgw_credentials_provider *pgw_credentials_provider_imds_from_env(pgw_http_client *http, char *err,
                                                                 size_t err_len)
{
    if (err_len)
        err[0] = '\0';
    if (pgw_credentials_env_true(pgw_credentials_getenv("AWS_EC2_METADATA_DISABLED")))
        return NULL;
    const char *endpoint = pgw_credentials_getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    if (!endpoint)
        endpoint = PGW_IMDS_DEFAULT_ENDPOINT;
    char scheme[16];
    if (pgw_credentials_url_parts(endpoint, scheme, sizeof(scheme), NULL, 0, NULL, 0, NULL, 0) !=
            0 ||
        (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
        snprintf(err, err_len, "AWS_EC2_METADATA_SERVICE_ENDPOINT is not an http(s) URL");
        return NULL;
    }
    imds_provider *m = calloc(1, sizeof(*m));
    if (!m) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    m->base.vtable = &imds_vtable;
    m->http = http;
    size_t n = strlen(endpoint);
    while (n > 0 && endpoint[n - 1] == '/')
        n--;
    if (n >= sizeof(m->endpoint)) {
        snprintf(err, err_len, "AWS_EC2_METADATA_SERVICE_ENDPOINT is too long");
        free(m);
        return NULL;
    }
    memcpy(m->endpoint, endpoint, n);
    m->endpoint[n] = '\0';
    return &m->base;
}

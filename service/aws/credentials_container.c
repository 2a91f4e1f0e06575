#include "service/aws/credentials_container.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "service/aws/credentials_source.h"

#define ECS_HOST "http://169.254.170.2"

typedef struct container_provider {
    pgw_credentials_provider base;
    pgw_http_client *http;
    char url[1024];
    char *token_file; /* re-read on every fetch */
    char *token;      /* fixed token (secret), when no file */
    pgw_http_transfer *transfer;
    pgw_credentials_pending pending;
} container_provider;

int pgw_credentials_container_url_allowed(const char *url)
{
    char scheme[16], host[300];
    if (pgw_credentials_url_parts(url, scheme, sizeof(scheme), NULL, 0, NULL, 0, host,
                                  sizeof(host)) != 0)
        return 0;
    if (strcmp(scheme, "https") == 0)
        return 1;
    if (strcmp(scheme, "http") != 0)
        return 0;
    if (strcasecmp(host, "localhost") == 0)
        return 1;
    unsigned char a4[4], a6[16], want6[16];
    if (inet_pton(AF_INET, host, a4) == 1)
        return a4[0] == 127 || strcmp(host, "169.254.170.2") == 0 ||
               strcmp(host, "169.254.170.23") == 0;
    if (inet_pton(AF_INET6, host, a6) == 1) {
        static const unsigned char loop6[16] = {[15] = 1};
        if (memcmp(a6, loop6, 16) == 0)
            return 1;
        inet_pton(AF_INET6, "fd00:ec2::23", want6);
        return memcmp(a6, want6, 16) == 0;
    }
    return 0;
}

static void on_response(const pgw_http_response *resp, void *user_data)
{
    container_provider *c = user_data;
    c->transfer = NULL;
    char err[300] = "", msg[400] = "";
    pgw_credentials *creds = NULL;
    if (resp->transport_error) {
        snprintf(err, sizeof(err), "unreachable: %.200s", resp->error ? resp->error : "");
    } else if (resp->status != 200) {
        /* The body is not quoted: an endpoint may echo what we sent. */
        snprintf(err, sizeof(err), "HTTP %ld", resp->status);
    } else {
        creds =
            pgw_credentials_from_json(resp->body, resp->body_len, "container", err, sizeof(err));
    }
    if (!resp->transport_error)
        pgw_credentials_wipe_body(resp->body, resp->body_len);
    if (!creds)
        snprintf(msg, sizeof(msg), "container credentials endpoint: %s", err);
    pgw_credentials_pending_finish(&c->pending, creds, msg);
    pgw_credentials_unref(creds);
}

static int container_get(pgw_credentials_provider *p, pgw_credentials_cb cb, void *user_data)
{
    container_provider *c = (container_provider *)p;
    if (c->pending.busy)
        return -1;
    c->pending = (pgw_credentials_pending){cb, user_data, 1};
    char err[300] = "";
    char *token = NULL;
    if (c->token_file)
        token = pgw_credentials_read_secret_file(c->token_file, PGW_CREDENTIALS_MAX_TOKEN_FILE, err,
                                                 sizeof(err));
    else if (c->token)
        token = strdup(c->token);
    int ok = !c->token_file || token;
    if (ok && token && strpbrk(token, "\r\n")) {
        snprintf(err, sizeof(err), "the authorization token contains a line break");
        ok = 0;
    }
    char *auth_line = NULL;
    if (ok && token) {
        size_t need = strlen(token) + sizeof("Authorization: ");
        auth_line = malloc(need);
        if (auth_line)
            snprintf(auth_line, need, "Authorization: %s", token);
        else
            ok = 0;
    }
    if (ok) {
        const char *headers[] = {"Accept: application/json", auth_line, NULL};
        pgw_http_request req = {
            .method = "GET",
            .url = c->url,
            .headers = headers,
            .timeout_ms = PGW_CONTAINER_TIMEOUT_MS,
        };
        c->transfer = pgw_http_start(c->http, &req, on_response, c);
        if (!c->transfer)
            snprintf(err, sizeof(err), "cannot start the request");
    }
    pgw_credentials_secret_free(auth_line);
    pgw_credentials_secret_free(token);
    if (!c->transfer) {
        char msg[400];
        snprintf(msg, sizeof(msg), "container credentials: %s", err[0] ? err : "out of memory");
        pgw_credentials_pending_finish(&c->pending, NULL, msg);
    }
    return 0;
}

static void container_destroy(pgw_credentials_provider *p)
{
    container_provider *c = (container_provider *)p;
    if (c->transfer)
        pgw_http_cancel(c->transfer);
    free(c->token_file);
    pgw_credentials_secret_free(c->token);
    free(c);
}

static const pgw_credentials_provider_vtable container_vtable = {container_get, NULL,
                                                                 container_destroy};

pgw_credentials_provider *pgw_credentials_provider_container_from_env(pgw_http_client *http,
                                                                      char *err, size_t err_len)
{
    if (err_len)
        err[0] = '\0';
    const char *relative = pgw_credentials_getenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    const char *full = pgw_credentials_getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    if (!relative && !full)
        return NULL;
    container_provider *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    c->base.vtable = &container_vtable;
    c->http = http;
    /* The relative URI wins, as in the SDKs; it always goes to the ECS agent address. */
    int n = relative ? snprintf(c->url, sizeof(c->url), "%s%s%s", ECS_HOST,
                                relative[0] == '/' ? "" : "/", relative)
                     : snprintf(c->url, sizeof(c->url), "%s", full);
    if (n < 0 || (size_t)n >= sizeof(c->url)) {
        snprintf(err, err_len, "the container credentials URI is too long");
        container_destroy(&c->base);
        return NULL;
    }
    if (!pgw_credentials_container_url_allowed(c->url)) {
        /* The URI is not secret but may carry a query: name the rule, not the value. */
        snprintf(err, err_len,
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI must be https, or http to a loopback "
                 "address, 169.254.170.2, 169.254.170.23 or fd00:ec2::23");
        container_destroy(&c->base);
        return NULL;
    }
    const char *file = pgw_credentials_getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    const char *token = pgw_credentials_getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN");
    if (file)
        c->token_file = strdup(file);
    else if (token)
        c->token = strdup(token);
    if ((file && !c->token_file) || (!file && token && !c->token)) {
        snprintf(err, err_len, "out of memory");
        container_destroy(&c->base);
        return NULL;
    }
    return &c->base;
}

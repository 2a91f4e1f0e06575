#include "service/aws/credentials_web_identity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/aws/credentials_source.h"
#include "service/aws/credentials_sts.h"
#include "service/text.h"

typedef struct web_identity_provider {
    pgw_credentials_provider base;
    pgw_http_client *http;
    char *token_file;
    char *role_arn;
    char *session_name;
    char url[PGW_STS_URL_MAX];
    char source[32];
    pgw_sts_call *call;
    pgw_credentials_pending pending;
} web_identity_provider;

static void on_sts(pgw_credentials *creds, const char *error, void *user_data)
{
    web_identity_provider *w = user_data;
    w->call = NULL;
    char msg[512];
    if (!creds)
        snprintf(msg, sizeof(msg), "web identity (role %.200s): %s", w->role_arn, error);
    pgw_credentials_pending_finish(&w->pending, creds, creds ? NULL : msg);
}

static int wi_get(pgw_credentials_provider *p, pgw_credentials_cb cb, void *user_data)
{
    web_identity_provider *w = (web_identity_provider *)p;
    if (w->pending.busy)
        return -1;
    w->pending = (pgw_credentials_pending){cb, user_data, 1};
    char err[400] = "";
    /* Re-read at every fetch: the kubelet rotates the projected token. */
    char *token = pgw_credentials_read_secret_file(w->token_file, PGW_CREDENTIALS_MAX_TOKEN_FILE,
                                                   err, sizeof(err));
    if (token) {
        pgw_sts_call_options o = {
            .http = w->http,
            .url = w->url,
            .action = "AssumeRoleWithWebIdentity",
            .role_arn = w->role_arn,
            .session_name = w->session_name,
            .web_identity_token = token,
            .source = w->source,
        };
        w->call = pgw_sts_call_start(&o, on_sts, w, err, sizeof(err));
        pgw_credentials_secret_free(token);
    }
    if (!w->call) {
        char msg[512];
        snprintf(msg, sizeof(msg), "web identity: %s", err);
        pgw_credentials_pending_finish(&w->pending, NULL, msg);
    }
    return 0;
}

static void wi_destroy(pgw_credentials_provider *p)
{
    web_identity_provider *w = (web_identity_provider *)p;
    pgw_sts_call_cancel(w->call);
    free(w->token_file);
    free(w->role_arn);
    free(w->session_name);
    free(w);
}

static const pgw_credentials_provider_vtable wi_vtable = {wi_get, NULL, wi_destroy};

pgw_credentials_provider *
pgw_credentials_provider_web_identity_new(const pgw_credentials_web_identity_options *o, char *err,
                                          size_t err_len)
{
    if (!o->token_file || !*o->token_file || !o->role_arn || !*o->role_arn) {
        snprintf(err, err_len, "web identity needs a token file and a role ARN");
        return NULL;
    }
    web_identity_provider *w = calloc(1, sizeof(*w));
    if (!w) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    w->base.vtable = &wi_vtable;
    w->http = o->http;
    w->token_file = strdup(o->token_file);
    w->role_arn = strdup(o->role_arn);
    if (o->session_name && *o->session_name) {
        w->session_name = strdup(o->session_name);
    } else {
        char name[64];
        pgw_sts_default_session_name(name, sizeof(name));
        w->session_name = strdup(name);
    }
    snprintf(w->source, sizeof(w->source), "%s", o->source ? o->source : "web_identity");
    if (!w->token_file || !w->role_arn || !w->session_name) {
        snprintf(err, err_len, "out of memory");
        wi_destroy(&w->base);
        return NULL;
    }
    if (pgw_sts_endpoint(o->region, w->url, sizeof(w->url)) != 0) {
        char q[PGW_TEXT_QUOTE_SIZE(32)];
        snprintf(err, err_len,
                 "no STS endpoint: region \"%s\" is not a valid AWS region name, or the URL is "
                 "too long",
                 pgw_text_quote_str(o->region, 32, q, sizeof(q)));
        wi_destroy(&w->base);
        return NULL;
    }
    return &w->base;
}

pgw_credentials_provider *pgw_credentials_provider_web_identity_from_env(pgw_http_client *http,
                                                                         char *err, size_t err_len)
{
    if (err_len)
        err[0] = '\0';
    const char *file = pgw_credentials_getenv("AWS_WEB_IDENTITY_TOKEN_FILE");
    const char *role = pgw_credentials_getenv("AWS_ROLE_ARN");
    if (!file || !role)
        return NULL;
    const char *region = pgw_credentials_getenv("AWS_REGION");
    if (!region)
        region = pgw_credentials_getenv("AWS_DEFAULT_REGION");
    pgw_credentials_web_identity_options o = {
        .http = http,
        .token_file = file,
        .role_arn = role,
        .session_name = pgw_credentials_getenv("AWS_ROLE_SESSION_NAME"),
        .region = region,
        .source = "web_identity",
    };
    return pgw_credentials_provider_web_identity_new(&o, err, err_len);
}

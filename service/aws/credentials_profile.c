#include "service/aws/credentials_profile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "service/aws/credentials_container.h"
#include "service/aws/credentials_imds.h"
#include "service/aws/credentials_source.h"
#include "service/aws/credentials_sts.h"
#include "service/aws/credentials_web_identity.h"
#include "service/text.h"

/* A name from the files, quoted for a message (names are not secrets, but may hold anything). */
typedef struct quoted {
    char s[PGW_TEXT_QUOTE_SIZE(64)];
} quoted;

static const char *q64(const char *name, quoted *q)
{
    return pgw_text_quote_str(name, 64, q->s, sizeof(q->s));
}

/* --- looking things up --- */

static void config_section(const char *name, char *out, size_t out_len)
{
    snprintf(out, out_len, "profile %s", name);
}

const char *pgw_credentials_profile_get(const pgw_ini *config, const pgw_ini *credentials,
                                        const char *name, const char *key)
{
    const char *v = pgw_ini_get(credentials, name, key);
    if (v)
        return v;
    char section[300];
    config_section(name, section, sizeof(section));
    v = pgw_ini_get(config, section, key);
    if (!v && strcmp(name, "default") == 0)
        v = pgw_ini_get(config, "default", key);
    return v;
}

int pgw_credentials_profile_exists(const pgw_ini *config, const pgw_ini *credentials,
                                   const char *name)
{
    char section[300];
    config_section(name, section, sizeof(section));
    return pgw_ini_has_section(credentials, name) || pgw_ini_has_section(config, section) ||
           (strcmp(name, "default") == 0 && pgw_ini_has_section(config, "default"));
}

/* --- AssumeRole with a source provider --- */

typedef struct assume_role_provider {
    pgw_credentials_provider base;
    pgw_http_client *http;
    pgw_credentials_provider *source; /* owned */
    char *role_arn;
    char *session_name;
    char *external_id;
    int duration_seconds;
    char region[64];
    char url[PGW_STS_URL_MAX];
    int source_pending; /* the source's callback is still owed to us */
    pgw_sts_call *call;
    pgw_credentials_pending pending;
} assume_role_provider;

static void ar_finish(assume_role_provider *a, pgw_credentials *creds, const char *error)
{
    char msg[600] = "";
    if (!creds)
        snprintf(msg, sizeof(msg), "AssumeRole %.200s: %.380s", a->role_arn, error);
    pgw_credentials_pending_finish(&a->pending, creds, msg);
}

static void ar_on_sts(pgw_credentials *creds, const char *error, void *user_data)
{
    assume_role_provider *a = user_data;
    a->call = NULL;
    ar_finish(a, creds, error);
}

static void ar_on_source(pgw_credentials *creds, const char *error, void *user_data)
{
    assume_role_provider *a = user_data;
    a->source_pending = 0;
    if (!creds) {
        char msg[400];
        snprintf(msg, sizeof(msg), "source credentials: %s", error);
        ar_finish(a, NULL, msg);
        return;
    }
    char err[300];
    pgw_sts_call_options o = {
        .http = a->http,
        .url = a->url,
        .region = a->region[0] ? a->region : NULL,
        .action = "AssumeRole",
        .role_arn = a->role_arn,
        .session_name = a->session_name,
        .external_id = a->external_id,
        .duration_seconds = a->duration_seconds,
        .signing = creds,
        .source = "profile",
    };
    a->call = pgw_sts_call_start(&o, ar_on_sts, a, err, sizeof(err));
    if (!a->call)
        ar_finish(a, NULL, err);
}

static int ar_get(pgw_credentials_provider *p, pgw_credentials_cb cb, void *user_data)
{
    assume_role_provider *a = (assume_role_provider *)p;
    if (a->pending.busy)
        return -1;
    a->pending = (pgw_credentials_pending){cb, user_data, 1};
    a->source_pending = 1;
    if (pgw_credentials_provider_get(a->source, ar_on_source, a) != 0) {
        a->source_pending = 0;
        ar_finish(a, NULL, "cannot get the source credentials");
    }
    return 0;
}

static void ar_destroy(pgw_credentials_provider *p)
{
    assume_role_provider *a = (assume_role_provider *)p;
    pgw_sts_call_cancel(a->call);
    pgw_credentials_provider_free(a->source); /* cancels its own fetch: no callback follows */
    free(a->role_arn);
    free(a->session_name);
    free(a->external_id);
    free(a);
}

static const pgw_credentials_provider_vtable ar_vtable = {ar_get, NULL, ar_destroy};

static const char *sts_region(const pgw_ini *config, const pgw_ini *credentials, const char *name)
{
    const char *r = pgw_credentials_getenv("AWS_REGION");
    if (!r)
        r = pgw_credentials_getenv("AWS_DEFAULT_REGION");
    if (!r)
        r = pgw_credentials_profile_get(config, credentials, name, "region");
    return r;
}

/* --- resolving a profile --- */

static pgw_credentials_provider *resolve(pgw_http_client *http, const pgw_ini *config,
                                         const pgw_ini *credentials, const char *name, int depth,
                                         char *err, size_t err_len);

static pgw_credentials_provider *static_keys(const pgw_ini *config, const pgw_ini *credentials,
                                             const char *name, char *err, size_t err_len)
{
    const char *akid = pgw_credentials_profile_get(config, credentials, name, "aws_access_key_id");
    const char *secret =
        pgw_credentials_profile_get(config, credentials, name, "aws_secret_access_key");
    if (!akid || !*akid || !secret || !*secret) {
        quoted qa;
        snprintf(err, err_len, "profile \"%s\" has no aws_access_key_id/aws_secret_access_key",
                 q64(name, &qa));
        return NULL;
    }
    pgw_credentials *creds = pgw_credentials_new(
        akid, secret, pgw_credentials_profile_get(config, credentials, name, "aws_session_token"),
        0, "profile");
    pgw_credentials_provider *p = pgw_credentials_provider_static_new(creds);
    pgw_credentials_unref(creds);
    if (!p)
        snprintf(err, err_len, "out of memory");
    return p;
}

/* The provider whose credentials sign AssumeRole for profile `name`. */
static pgw_credentials_provider *role_source(pgw_http_client *http, const pgw_ini *config,
                                             const pgw_ini *credentials, const char *name,
                                             int depth, char *err, size_t err_len)
{
    const char *source_profile =
        pgw_credentials_profile_get(config, credentials, name, "source_profile");
    const char *credential_source =
        pgw_credentials_profile_get(config, credentials, name, "credential_source");
    if (source_profile && credential_source) {
        quoted qa;
        snprintf(err, err_len, "profile \"%s\" sets both source_profile and credential_source",
                 q64(name, &qa));
        return NULL;
    }
    if (source_profile) {
        if (strcmp(source_profile, name) == 0)
            return static_keys(config, credentials, name, err, err_len);
        if (!pgw_credentials_profile_exists(config, credentials, source_profile)) {
            quoted qa, qb;
            snprintf(err, err_len, "profile \"%s\": source_profile \"%s\" not found",
                     q64(name, &qa), q64(source_profile, &qb));
            return NULL;
        }
        return resolve(http, config, credentials, source_profile, depth + 1, err, err_len);
    }
    if (credential_source) {
        pgw_credentials_provider *p = NULL;
        err[0] = '\0';
        if (strcmp(credential_source, "Environment") == 0)
            p = pgw_credentials_provider_env_new();
        else if (strcmp(credential_source, "Ec2InstanceMetadata") == 0)
            p = pgw_credentials_provider_imds_from_env(http, err, err_len);
        else if (strcmp(credential_source, "EcsContainer") == 0)
            p = pgw_credentials_provider_container_from_env(http, err, err_len);
        else {
            quoted qa, qb;
            snprintf(err, err_len, "profile \"%s\": unknown credential_source \"%s\"",
                     q64(name, &qa), q64(credential_source, &qb));
            return NULL;
        }
        if (!p && !err[0]) {
            quoted qa, qb;
            snprintf(err, err_len, "profile \"%s\": credential_source %s is not available",
                     q64(name, &qa), q64(credential_source, &qb));
        }
        return p;
    }
    {
        quoted qa;
        snprintf(err, err_len,
                 "profile \"%s\" has role_arn but no source_profile, credential_source or "
                 "web_identity_token_file",
                 q64(name, &qa));
    }
    return NULL;
}

static pgw_credentials_provider *resolve(pgw_http_client *http, const pgw_ini *config,
                                         const pgw_ini *credentials, const char *name, int depth,
                                         char *err, size_t err_len)
{
    if (depth > PGW_PROFILE_MAX_DEPTH) {
        quoted qa;
        snprintf(err, err_len, "profile \"%s\": source_profile chain longer than %d (a loop?)",
                 q64(name, &qa), PGW_PROFILE_MAX_DEPTH);
        return NULL;
    }
    const char *role_arn = pgw_credentials_profile_get(config, credentials, name, "role_arn");
    const char *session =
        pgw_credentials_profile_get(config, credentials, name, "role_session_name");
    const char *region = sts_region(config, credentials, name);
    if (role_arn && *role_arn) {
        const char *token_file =
            pgw_credentials_profile_get(config, credentials, name, "web_identity_token_file");
        if (token_file && *token_file) {
            pgw_credentials_web_identity_options o = {
                .http = http,
                .token_file = token_file,
                .role_arn = role_arn,
                .session_name = session,
                .region = region,
                .source = "profile",
            };
            return pgw_credentials_provider_web_identity_new(&o, err, err_len);
        }
        pgw_credentials_provider *source =
            role_source(http, config, credentials, name, depth, err, err_len);
        if (!source)
            return NULL;
        assume_role_provider *a = calloc(1, sizeof(*a));
        if (!a) {
            pgw_credentials_provider_free(source);
            snprintf(err, err_len, "out of memory");
            return NULL;
        }
        a->base.vtable = &ar_vtable;
        a->http = http;
        a->source = source;
        a->role_arn = strdup(role_arn);
        char generated[64];
        pgw_sts_default_session_name(generated, sizeof(generated));
        a->session_name = strdup(session && *session ? session : generated);
        const char *ext = pgw_credentials_profile_get(config, credentials, name, "external_id");
        a->external_id = ext && *ext ? strdup(ext) : NULL;
        const char *dur =
            pgw_credentials_profile_get(config, credentials, name, "duration_seconds");
        a->duration_seconds = dur ? atoi(dur) : 0;
        snprintf(a->region, sizeof(a->region), "%s", region ? region : "");
        if (!a->role_arn || !a->session_name || (ext && *ext && !a->external_id) ||
            pgw_sts_endpoint(region, a->url, sizeof(a->url)) != 0) {
            ar_destroy(&a->base);
            snprintf(err, err_len, "out of memory");
            return NULL;
        }
        return &a->base;
    }
    if (pgw_credentials_profile_get(config, credentials, name, "aws_access_key_id"))
        return static_keys(config, credentials, name, err, err_len);
    if (pgw_credentials_profile_get(config, credentials, name, "credential_process")) {
        quoted qa;
        snprintf(err, err_len, "profile \"%s\": credential_process is not supported",
                 q64(name, &qa));
        return NULL;
    }
    if (pgw_credentials_profile_get(config, credentials, name, "sso_start_url") ||
        pgw_credentials_profile_get(config, credentials, name, "sso_session")) {
        quoted qa;
        snprintf(err, err_len, "profile \"%s\": SSO profiles are not supported", q64(name, &qa));
        return NULL;
    }
    {
        quoted qa;
        snprintf(err, err_len, "profile \"%s\" has no credentials", q64(name, &qa));
    }
    return NULL;
}

pgw_credentials_provider *pgw_credentials_provider_profile_new(pgw_http_client *http,
                                                               const pgw_ini *config,
                                                               const pgw_ini *credentials,
                                                               const char *name, char *err,
                                                               size_t err_len)
{
    if (!pgw_credentials_profile_exists(config, credentials, name)) {
        quoted qa;
        snprintf(err, err_len, "profile \"%s\" not found in the shared config files",
                 q64(name, &qa));
        return NULL;
    }
    return resolve(http, config, credentials, name, 0, err, err_len);
}

/* --- the files --- */

/* Expands a leading "~/" with HOME into out. */
static int expand_path(const char *path, char *out, size_t out_len)
{
    int n;
    if (path[0] == '~' && (path[1] == '/' || path[1] == '\0')) {
        const char *home = pgw_credentials_getenv("HOME");
        if (!home)
            return -1;
        n = snprintf(out, out_len, "%s%s", home, path + 1);
    } else {
        n = snprintf(out, out_len, "%s", path);
    }
    return (n >= 0 && (size_t)n < out_len) ? 0 : -1;
}

static int load_one(const char *env, const char *fallback, pgw_ini **out, char *err, size_t err_len)
{
    *out = NULL;
    const char *raw = pgw_credentials_getenv(env);
    char path[1024];
    if (expand_path(raw ? raw : fallback, path, sizeof(path)) != 0)
        return 0; /* no HOME: no default file */
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return 0;
        snprintf(err, err_len, "%s: cannot stat %.200s: %s", env, path, strerror(errno));
        return -1;
    }
    if (st.st_size == 0)
        return 0;
    char rerr[300];
    char *text = pgw_credentials_read_secret_file(path, PGW_INI_MAX_BYTES, rerr, sizeof(rerr));
    if (!text) {
        snprintf(err, err_len, "%s", rerr);
        return -1;
    }
    char perr[200];
    *out = pgw_ini_parse(text, strlen(text), perr, sizeof(perr));
    pgw_credentials_secret_free(text);
    if (!*out) {
        snprintf(err, err_len, "%.200s: %s", path, perr);
        return -1;
    }
    return 0;
}

int pgw_credentials_profile_load_files(pgw_ini **config, pgw_ini **credentials, char *err,
                                       size_t err_len)
{
    *credentials = NULL;
    if (load_one("AWS_CONFIG_FILE", "~/.aws/config", config, err, err_len) != 0)
        return -1;
    if (load_one("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials", credentials, err, err_len) !=
        0) {
        pgw_ini_free(*config);
        *config = NULL;
        return -1;
    }
    return 0;
}

pgw_credentials_provider *pgw_credentials_provider_profile_from_env(pgw_http_client *http,
                                                                    char *err, size_t err_len)
{
    if (err_len)
        err[0] = '\0';
    const char *explicit_name = pgw_credentials_getenv("AWS_PROFILE");
    const char *name = explicit_name ? explicit_name : "default";
    pgw_ini *config = NULL, *credentials = NULL;
    if (pgw_credentials_profile_load_files(&config, &credentials, err, err_len) != 0)
        return NULL;
    pgw_credentials_provider *p = NULL;
    /* A profile with only settings such as region is not a credentials source: the chain goes
     * on to the container and IMDS, as in the SDKs. */
    static const char *const keys[] = {"aws_access_key_id",  "role_arn",
                                       "credential_process", "sso_start_url",
                                       "sso_session",        "web_identity_token_file"};
    int has_credentials = 0;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        has_credentials |= pgw_credentials_profile_get(config, credentials, name, keys[i]) != NULL;
    if (has_credentials)
        p = pgw_credentials_provider_profile_new(http, config, credentials, name, err, err_len);
    else if (explicit_name && !pgw_credentials_profile_exists(config, credentials, name)) {
        quoted qa;
        snprintf(err, err_len, "AWS_PROFILE \"%s\" not found in the shared config files",
                 q64(name, &qa));
    }
    pgw_ini_free(config);
    pgw_ini_free(credentials);
    return p;
}

#include "service/aws/credentials.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dup_or_null(const char *s)
{
    return (s && *s) ? strdup(s) : NULL;
}

static void free_secret(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static int header_safe(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return 0;
    return 1;
}

int pgw_credentials_usable(const char *access_key_id, const char *secret_access_key,
                           const char *session_token)
{
    return access_key_id && *access_key_id && secret_access_key && *secret_access_key &&
           header_safe(access_key_id) && (!session_token || header_safe(session_token));
}

pgw_credentials *pgw_credentials_new(const char *access_key_id, const char *secret_access_key,
                                     const char *session_token, int64_t expires_wall_ms,
                                     const char *source)
{
    if (!pgw_credentials_usable(access_key_id, secret_access_key, session_token))
        return NULL;
    pgw_credentials *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->access_key_id = strdup(access_key_id);
    c->secret_access_key = strdup(secret_access_key);
    c->session_token = dup_or_null(session_token);
    c->expires_wall_ms = expires_wall_ms;
    snprintf(c->source, sizeof(c->source), "%s", source ? source : "unknown");
    c->refs = 1;
    if (!c->access_key_id || !c->secret_access_key ||
        (session_token && *session_token && !c->session_token)) {
        c->refs = 1;
        pgw_credentials_unref(c);
        return NULL;
    }
    return c;
}

pgw_credentials *pgw_credentials_ref(pgw_credentials *creds)
{
    if (creds)
        __atomic_add_fetch(&creds->refs, 1, __ATOMIC_RELAXED);
    return creds;
}

void pgw_credentials_unref(pgw_credentials *creds)
{
    if (!creds || __atomic_sub_fetch(&creds->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    free(creds->access_key_id);
    free_secret(creds->secret_access_key);
    free_secret(creds->session_token);
    free(creds);
}

int pgw_credentials_expired(const pgw_credentials *creds, int64_t now_wall_ms, int64_t margin_ms)
{
    return creds->expires_wall_ms != 0 && now_wall_ms + margin_ms >= creds->expires_wall_ms;
}

/* --- static provider (environment, profile keys) --- */

typedef struct env_provider {
    pgw_credentials_provider base;
    pgw_credentials *creds;
} env_provider;

static int env_get(pgw_credentials_provider *p, pgw_credentials_cb cb, void *user_data)
{
    env_provider *ep = (env_provider *)p;
    cb(ep->creds, NULL, user_data);
    return 0;
}

static void env_destroy(pgw_credentials_provider *p)
{
    env_provider *ep = (env_provider *)p;
    pgw_credentials_unref(ep->creds);
    free(ep);
}

static const pgw_credentials_provider_vtable env_vtable = {env_get, NULL, env_destroy};

pgw_credentials_provider *pgw_credentials_provider_static_new(pgw_credentials *creds)
{
    if (!creds)
        return NULL;
    env_provider *ep = calloc(1, sizeof(*ep));
    if (!ep)
        return NULL;
    ep->base.vtable = &env_vtable;
    ep->creds = pgw_credentials_ref(creds);
    return &ep->base;
}

pgw_credentials_provider *pgw_credentials_provider_env_new(void)
{
    pgw_credentials *creds =
        pgw_credentials_new(getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY"),
                            getenv("AWS_SESSION_TOKEN"), 0, "environment");
    pgw_credentials_provider *p = pgw_credentials_provider_static_new(creds);
    pgw_credentials_unref(creds); /* the provider holds its own reference */
    return p;
}

/* --- the provider of last resort: no source had credentials --- */

typedef struct none_provider {
    pgw_credentials_provider base;
    char reason[200];
} none_provider;

static int none_get(pgw_credentials_provider *p, pgw_credentials_cb cb, void *user_data)
{
    cb(NULL, ((none_provider *)p)->reason, user_data);
    return 0;
}

static void none_destroy(pgw_credentials_provider *p)
{
    free(p);
}

static const pgw_credentials_provider_vtable none_vtable = {none_get, NULL, none_destroy};

pgw_credentials_provider *pgw_credentials_provider_none_new(const char *reason)
{
    none_provider *np = calloc(1, sizeof(*np));
    if (!np)
        return NULL;
    np->base.vtable = &none_vtable;
    snprintf(np->reason, sizeof(np->reason), "%s", reason);
    return &np->base;
}

/* AWS credentials and the provider interface every credentials source implements.
 *
 * pgw_credentials is immutable and reference counted: a signer takes a ref for as long as it
 * signs, so a refresh may replace the provider's current credentials at any time. The secret
 * parts are wiped when the last ref goes.
 *
 * Providers are used on the event-loop thread only. */
#ifndef PGW_CREDENTIALS_H
#define PGW_CREDENTIALS_H

#include <stdint.h>

typedef struct pgw_credentials {
    char *access_key_id;
    char *secret_access_key;
    char *session_token;     /* NULL for long-term keys */
    int64_t expires_wall_ms; /* 0: does not expire */
    char source[32];         /* where they came from ("environment", ...), safe to log */
    int refs;                /* atomic */
} pgw_credentials;

/* Nonzero when the parts can make credentials: a key id and a secret, not empty, and a key id
 * and session token (if any) of printable ASCII without spaces, because they go into request
 * headers (Authorization, X-Amz-Security-Token): a CR/LF there would add a header, a NUL cut
 * one. Answers from STS, IMDS or a container endpoint are checked with it. */
int pgw_credentials_usable(const char *access_key_id, const char *secret_access_key,
                           const char *session_token);

/* Copies the strings. Returns NULL on allocation failure or when the parts are not usable
 * (pgw_credentials_usable). The result holds one reference. */
pgw_credentials *pgw_credentials_new(const char *access_key_id, const char *secret_access_key,
                                     const char *session_token, int64_t expires_wall_ms,
                                     const char *source);
pgw_credentials *pgw_credentials_ref(pgw_credentials *creds);
void pgw_credentials_unref(pgw_credentials *creds);

/* Nonzero when the credentials must not sign at `now_wall_ms` (expired, or within `margin_ms`
 * of expiry). */
int pgw_credentials_expired(const pgw_credentials *creds, int64_t now_wall_ms, int64_t margin_ms);

typedef struct pgw_credentials_provider pgw_credentials_provider;

/* Delivers credentials (a borrowed reference: take your own with pgw_credentials_ref to keep
 * them) or NULL with a message that names the problem but never a secret. */
typedef void (*pgw_credentials_cb)(pgw_credentials *creds, const char *error, void *user_data);

typedef struct pgw_credentials_provider_vtable {
    /* Starts getting credentials. Returns 0 and the callback fires exactly once (possibly
     * before this returns), or -1 and it never fires. */
    int (*get)(pgw_credentials_provider *provider, pgw_credentials_cb cb, void *user_data);
    /* AWS rejected `rejected` as expired: fetch new ones on the next get, unless the provider
     * already moved on from them (a burst of rejections then costs one refresh, not many).
     * rejected == NULL: refresh whatever is current. */
    void (*invalidate)(pgw_credentials_provider *provider, const pgw_credentials *rejected);
    void (*destroy)(pgw_credentials_provider *provider);
} pgw_credentials_provider_vtable;

struct pgw_credentials_provider {
    const pgw_credentials_provider_vtable *vtable;
};

static inline int pgw_credentials_provider_get(pgw_credentials_provider *p, pgw_credentials_cb cb,
                                               void *user_data)
{
    return p->vtable->get(p, cb, user_data);
}

static inline void pgw_credentials_provider_invalidate(pgw_credentials_provider *p,
                                                       const pgw_credentials *rejected)
{
    if (p->vtable->invalidate)
        p->vtable->invalidate(p, rejected);
}

static inline void pgw_credentials_provider_free(pgw_credentials_provider *p)
{
    if (p)
        p->vtable->destroy(p);
}

/* A provider that always delivers `creds` (it takes its own reference): long-term keys from the
 * environment or a profile. Returns NULL when creds is NULL or out of memory. */
pgw_credentials_provider *pgw_credentials_provider_static_new(pgw_credentials *creds);

/* The first source of the chain: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optional
 * AWS_SESSION_TOKEN, read once at creation. Returns NULL when they are not set (the caller
 * moves on to the next source). */
pgw_credentials_provider *pgw_credentials_provider_env_new(void);

/* Told when the usable credentials change: new credentials were obtained (creds, borrowed for
 * the call), or the last ones expired with no replacement (NULL). For readiness and metrics;
 * runs on the loop thread. */
typedef void (*pgw_credentials_change_cb)(const pgw_credentials *creds, void *user_data);

/* A provider that always fails with `reason` (copied): used when no source is configured, so
 * the gateway still starts and answers UNAVAILABLE saying why. */
pgw_credentials_provider *pgw_credentials_provider_none_new(const char *reason);
#endif

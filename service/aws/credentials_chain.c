#include "service/aws/credentials_chain.h"

#include <stdio.h>
#include <stdlib.h>

#include "service/aws/credentials_cached.h"
#include "service/aws/credentials_container.h"
#include "service/aws/credentials_imds.h"
#include "service/aws/credentials_profile.h"
#include "service/aws/credentials_web_identity.h"

const char *pgw_credentials_source_name(pgw_credentials_source_kind kind)
{
    switch (kind) {
    case PGW_CREDENTIALS_SOURCE_ENVIRONMENT:
        return "environment";
    case PGW_CREDENTIALS_SOURCE_WEB_IDENTITY:
        return "web_identity";
    case PGW_CREDENTIALS_SOURCE_PROFILE:
        return "profile";
    case PGW_CREDENTIALS_SOURCE_CONTAINER:
        return "container";
    case PGW_CREDENTIALS_SOURCE_IMDS:
        return "imds";
    case PGW_CREDENTIALS_SOURCE_NONE:
        break;
    }
    return "none";
}

pgw_credentials_provider *pgw_credentials_chain_new(const pgw_credentials_chain_options *o,
                                                    pgw_credentials_source_kind *kind_out,
                                                    char *err, size_t err_len)
{
    char why[400] = "";
    pgw_credentials_source_kind kind = PGW_CREDENTIALS_SOURCE_NONE;
    pgw_credentials_provider *source = NULL;
    const char *env_akid = getenv("AWS_ACCESS_KEY_ID"),
               *env_secret = getenv("AWS_SECRET_ACCESS_KEY");
    if ((source = pgw_credentials_provider_env_new())) {
        kind = PGW_CREDENTIALS_SOURCE_ENVIRONMENT;
    } else if (env_akid && *env_akid && env_secret && *env_secret) {
        /* Configured but unusable (a key id or token with a space or a line break, as a
         * secret mounted with its trailing newline has): say so rather than move on to the
         * next source. */
        kind = PGW_CREDENTIALS_SOURCE_ENVIRONMENT;
        snprintf(why, sizeof(why),
                 "AWS_ACCESS_KEY_ID or AWS_SESSION_TOKEN holds a space, a line break or another "
                 "character a request header cannot carry");
    } else if ((source =
                    pgw_credentials_provider_web_identity_from_env(o->http, why, sizeof(why))) ||
               why[0])
        kind = PGW_CREDENTIALS_SOURCE_WEB_IDENTITY;
    else if ((source = pgw_credentials_provider_profile_from_env(o->http, why, sizeof(why))) ||
             why[0])
        kind = PGW_CREDENTIALS_SOURCE_PROFILE;
    else if ((source = pgw_credentials_provider_container_from_env(o->http, why, sizeof(why))) ||
             why[0])
        kind = PGW_CREDENTIALS_SOURCE_CONTAINER;
    else if ((source = pgw_credentials_provider_imds_from_env(o->http, why, sizeof(why))) || why[0])
        kind = PGW_CREDENTIALS_SOURCE_IMDS;
    if (kind_out)
        *kind_out = kind;
    if (!source) {
        if (kind == PGW_CREDENTIALS_SOURCE_NONE)
            snprintf(err, err_len,
                     "no AWS credentials source is configured (environment keys, web identity, "
                     "a profile, container credentials; instance metadata is disabled)");
        else
            snprintf(err, err_len, "AWS credentials source %s: %s",
                     pgw_credentials_source_name(kind), why);
        return NULL;
    }
    pgw_credentials_cached_options co = {
        .base = o->base,
        .source = source,
        .name = pgw_credentials_source_name(kind),
        .refresh_window_ms = o->refresh_window_ms,
        .eager = o->eager,
        .on_change = o->on_change,
        .on_change_data = o->on_change_data,
    };
    pgw_credentials_provider *p = pgw_credentials_provider_cached_new(&co);
    if (!p)
        snprintf(err, err_len, "out of memory");
    return p;
}

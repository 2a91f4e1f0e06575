#include "service/config.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/text.h"

typedef enum opt_type {
    OPT_STRING,   /* any string; "" allowed */
    OPT_HOSTPORT, /* host:port listen address; "" allowed where optional */
    OPT_INT,      /* decimal integer within [min, max] */
    OPT_URL,      /* absolute URL; empty = unset */
    OPT_LEVEL,    /* debug|info|warn|error */
} opt_type;

typedef struct opt_def {
    const char *name; /* flag without the leading "--" */
    opt_type type;
    size_t offset;             /* into pgw_config */
    const char *default_value; /* NULL = unset */
    long min, max;
    const char *help;
} opt_def;

#define STR_OPT(field, type, def, help)                                                            \
    {                                                                                              \
#field, type, offsetof(pgw_config, field), def, 0, 0, help                                 \
    }
#define INT_OPT(field, def, lo, hi, help)                                                          \
    {                                                                                              \
#field, OPT_INT, offsetof(pgw_config, field), def, lo, hi, help                            \
    }

/* Flag names are derived from field names (grpc_addr -> --grpc-addr, PGW_GRPC_ADDR). */
static const opt_def options[] = {
    STR_OPT(grpc_addr, OPT_HOSTPORT, "0.0.0.0:50051", "gRPC listen address (host:port)"),
    STR_OPT(http_addr, OPT_HOSTPORT, "0.0.0.0:8080",
            "HTTP listen address (host:port; empty disables the HTTP side)"),
    INT_OPT(grpc_threads, "2", 1, 64, "gRPC completion-queue threads"),
    INT_OPT(grpc_max_recv_bytes, "16384", 512, 4194304,
            "largest gRPC request message accepted, in bytes"),
    INT_OPT(shutdown_grace_ms, "10000", 0, 600000,
            "on SIGTERM/SIGINT, time in-flight calls get to finish"),
    STR_OPT(log_level, OPT_LEVEL, "info", "minimum log level: debug, info, warn, error"),
    INT_OPT(core_dumps, "0", 0, 1,
            "1 allows core dumps (they would hold AWS secrets: for debugging only)"),
    INT_OPT(http_max_header_bytes, "16384", 1024, 1048576,
            "largest HTTP request line + headers accepted, in bytes (larger: 400)"),
    INT_OPT(http_max_body_bytes, "65536", 1024, 16777216,
            "largest HTTP request body accepted, in bytes (larger: 413)"),
    INT_OPT(http_request_timeout_ms, "30000", 100, 600000,
            "HTTP inactivity limit (slow clients, idle keep-alive) and deadline of an HTTP call"),
    INT_OPT(upstream_timeout_ms, "10000", 100, 600000,
            "timeout of one upstream attempt (also bounded by the caller's deadline)"),
    INT_OPT(upstream_connect_timeout_ms, "3000", 100, 60000, "upstream connect timeout"),
    INT_OPT(upstream_max_attempts, "3", 1, 10,
            "attempts per upstream call (AWS standard retry mode)"),
    INT_OPT(upstream_max_in_flight, "1000", 1, 100000,
            "concurrent upstream fetches (one per ARN, shared by its coalesced callers)"),
    INT_OPT(upstream_max_queued, "1000", 0, 1000000,
            "fetches waiting for an upstream slot; past it a miss fails fast with UNAVAILABLE"),
    INT_OPT(upstream_max_connections, "1000", 1, 100000,
            "upstream connections per host, reused; HTTP/2 multiplexes many fetches on one"),
    INT_OPT(max_concurrent_calls, "10000", 1, 1000000,
            "calls in flight at once (fresh in-process hits aside); past it RESOURCE_EXHAUSTED"),
    STR_OPT(upstream_ca_file, OPT_STRING, NULL,
            "PEM CA bundle for https upstream endpoints (default: the system's)"),
    INT_OPT(credentials_refresh_window_s, "900", 1, 86400,
            "refresh temporary AWS credentials this long before they expire (at most half "
            "their lifetime ahead)"),
    STR_OPT(redis_url, OPT_URL, NULL,
            "redis[s]://[[user]:password@]host:port[/db] (rediss: TLS; user: an ACL user); "
            "unset: in-process cache only"),
    INT_OPT(redis_timeout_ms, "50", 1, 10000, "Redis command timeout; slower means a miss"),
    INT_OPT(redis_lease_ms, "3000", 100, 600000,
            "life of a replica's fetch lease in Redis: how long the others wait before one of "
            "them takes over from a holder that died"),
    STR_OPT(redis_ca_file, OPT_STRING, NULL,
            "PEM CA bundle the Redis server's certificate must chain to (rediss://; default: "
            "the system's)"),
    STR_OPT(redis_cert, OPT_STRING, NULL,
            "PEM client certificate chain presented to Redis (rediss://, with --redis-key)"),
    STR_OPT(redis_key, OPT_STRING, NULL, "PEM private key of --redis-cert (unencrypted)"),
    STR_OPT(redis_password_file, OPT_STRING, NULL,
            "file holding the Redis password (e.g. a mounted Secret), used when --redis-url has "
            "none; re-read at every reconnect, one trailing newline ignored"),
    INT_OPT(cache_ttl_terminal_s, "3600", 1, 604800,
            "cache TTL of jobs in a terminal status (ACTIVE, CREATE FAILED)"),
    INT_OPT(cache_ttl_running_s, "10", 1, 86400,
            "cache TTL of jobs still running (PENDING, IN PROGRESS, unknown)"),
    INT_OPT(cache_ttl_not_found_s, "5", 0, 3600, "cache TTL of NOT_FOUND answers (0: never)"),
    INT_OPT(cache_stale_s, "300", 0, 86400,
            "how long past its TTL an entry may answer when the upstream fails"),
    INT_OPT(cache_jitter_pct, "10", 0, 50, "random +/- jitter applied to cache TTLs, percent"),
    INT_OPT(l1_max_entries, "100000", 0, 100000000, "in-process cache entries (0 disables it)"),
    INT_OPT(l1_max_bytes, "67108864", 0, INT_MAX, "in-process cache size bound in bytes"),
    INT_OPT(l1_ttl_ms, "1000", 0, 3600000,
            "in-process cache TTL when Redis is configured (without Redis the status TTLs apply)"),
    INT_OPT(watch_poll_interval_s, NULL, 1, 86400,
            "how often a watched job is polled, once for the whole fleet (unset: "
            "--cache-ttl-running-s)"),
    INT_OPT(watch_max_streams, "10000", 0, 1000000,
            "watch streams open at once (gRPC and SSE); past it a new one gets "
            "RESOURCE_EXHAUSTED"),
    STR_OPT(tls_cert, OPT_STRING, NULL,
            "PEM certificate chain: serve gRPC over TLS (with --tls-key)"),
    STR_OPT(tls_key, OPT_STRING, NULL, "PEM private key of --tls-cert"),
    STR_OPT(tls_client_ca, OPT_STRING, NULL,
            "PEM CA bundle: mutual TLS; callers must present a certificate it signed, whose "
            "URI SAN (SPIFFE ID), else DNS SAN, else CN is their identity"),
    INT_OPT(tls_poll_ms, "1000", 100, 3600000,
            "how often the --tls-cert, --tls-key and --tls-client-ca files are checked for "
            "changes (new handshakes use a changed version; SIGHUP re-reads them at once)"),
    STR_OPT(identity_header, OPT_STRING, NULL,
            "plain-text mode: request header carrying the caller identity; ONLY safe behind a "
            "sidecar that terminates mTLS and always sets it"),
    INT_OPT(require_identity, "0", 0, 1,
            "1: calls without a caller identity get UNAUTHENTICATED (implied by --tls-client-ca)"),
    STR_OPT(policy_file, OPT_STRING, NULL,
            "authorization policy (JSON, see docs/security.md): default deny; reloaded on SIGHUP "
            "and when the file changes"),
    INT_OPT(policy_poll_ms, "1000", 100, 3600000, "how often the policy file is checked"),
    INT_OPT(rate_limit_per_caller, "0", 0, 1000000,
            "requests per second per caller identity (0: no limit); over it: RESOURCE_EXHAUSTED"),
    INT_OPT(rate_limit_per_caller_burst, "0", 0, 1000000,
            "per-caller bucket size (0: the per-second rate)"),
    INT_OPT(upstream_rate_limit, "0", 0, 1000000,
            "upstream calls per second for the whole gateway (0: no limit); cache hits are free"),
    INT_OPT(upstream_rate_limit_burst, "0", 0, 1000000,
            "upstream bucket size (0: the per-second rate)"),
    INT_OPT(upstream_rate_limit_max_wait_ms, "1000", 0, 60000,
            "longest a cache miss waits for an upstream token before UNAVAILABLE"),
    STR_OPT(audit_log, OPT_STRING, "auto",
            "one JSON audit line per call: on, off, or auto (on when authentication or a policy "
            "is configured)"),
};
#define N_OPTIONS (sizeof(options) / sizeof(options[0]))

static void flag_name(const opt_def *o, char *buf, size_t len)
{
    snprintf(buf, len, "--%s", o->name);
    for (char *p = buf + 2; *p; p++)
        if (*p == '_')
            *p = '-';
}

static void env_name(const opt_def *o, char *buf, size_t len)
{
    snprintf(buf, len, "PGW_%s", o->name);
    for (char *p = buf; *p; p++)
        *p = (char)toupper((unsigned char)*p);
}

int pgw_config_check_hostport(const char *value)
{
    const char *colon = strrchr(value, ':');
    if (!colon || colon == value)
        return -1;
    size_t host_len = (size_t)(colon - value);
    if (value[0] == '[') {
        if (host_len < 3 || value[host_len - 1] != ']')
            return -1;
    } else {
        for (size_t i = 0; i < host_len; i++) {
            unsigned char c = (unsigned char)value[i];
            if (!isalnum(c) && c != '.' && c != '-')
                return -1;
        }
    }
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno || port < 0 || port > 65535)
        return -1;
    return 0;
}

/* An absolute URL with a scheme and host, parsed by libcurl's URL API. Only the schemes
 * in `schemes` (comma separated) are accepted. */
static int check_url(const char *value, const char *schemes)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    int ok = u && curl_url_set(u, CURLUPART_URL, value, CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host[0] != '\0';
    if (ok) {
        ok = 0;
        size_t n = strlen(scheme);
        for (const char *s = schemes; *s;) {
            const char *comma = strchr(s, ',');
            size_t len = comma ? (size_t)(comma - s) : strlen(s);
            if (len == n && strncmp(s, scheme, n) == 0)
                ok = 1;
            s += len + (comma ? 1 : 0);
        }
    }
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return ok ? 0 : -1;
}

/* Stores one value, validated. `source` names where it came from, for the error message;
 * the message never repeats a URL, which may carry a password. */
static int set_option(pgw_config *cfg, const opt_def *o, const char *value, const char *source,
                      char *err, size_t err_len)
{
    char *field = (char *)cfg + o->offset;
    switch (o->type) {
    case OPT_INT: {
        char *end;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (value[0] == '\0' || *end != '\0' || errno || v < o->min || v > o->max) {
            char q[PGW_TEXT_QUOTE_SIZE(64)];
            snprintf(err, err_len, "%s: \"%s\" is not an integer in [%ld, %ld]", source,
                     pgw_text_quote_str(value, 64, q, sizeof(q)), o->min, o->max);
            return -1;
        }
        *(int *)field = (int)v;
        return 0;
    }
    case OPT_HOSTPORT:
        if (value[0] != '\0' && pgw_config_check_hostport(value) != 0) {
            char q[PGW_TEXT_QUOTE_SIZE(128)];
            snprintf(err, err_len, "%s: \"%s\" is not a host:port address", source,
                     pgw_text_quote_str(value, 128, q, sizeof(q)));
            return -1;
        }
        break;
    case OPT_URL:
        if (value[0] != '\0' && check_url(value, "redis,rediss") != 0) {
            snprintf(err, err_len,
                     "%s: not a valid redis[s]://[[user]:password@]host:port[/db] URL", source);
            return -1;
        }
        break;
    case OPT_LEVEL:
        if (strcmp(value, "debug") && strcmp(value, "info") && strcmp(value, "warn") &&
            strcmp(value, "error")) {
            char q[PGW_TEXT_QUOTE_SIZE(32)];
            snprintf(err, err_len, "%s: \"%s\" is not one of debug, info, warn, error", source,
                     pgw_text_quote_str(value, 32, q, sizeof(q)));
            return -1;
        }
        break;
    case OPT_STRING:
        break;
    }
    char **slot = (char **)field;
    free(*slot);
    *slot = (o->type == OPT_URL && value[0] == '\0') ? NULL : strdup(value);
    return 0;
}

static void print_usage(void)
{
    printf("Usage: personalize-gateway [flags]\n\n"
           "Serves Amazon Personalize DescribeBatchInferenceJob over gRPC and HTTP, with caching.\n"
           "Every flag may also be set as an environment variable (shown in brackets).\n\n");
    for (size_t i = 0; i < N_OPTIONS; i++) {
        char flag[64], env[64];
        flag_name(&options[i], flag, sizeof(flag));
        env_name(&options[i], env, sizeof(env));
        printf("  %-32s %s\n  %-32s [%s] default: %s\n", flag, options[i].help, "", env,
               options[i].default_value ? options[i].default_value : "(unset)");
    }
    printf(
        "\nAWS settings come from the AWS SDKs' standard environment: AWS_REGION,\n"
        "AWS_ENDPOINT_URL_PERSONALIZE, AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL, and the\n"
        "credentials chain, first configured source wins: AWS_ACCESS_KEY_ID +\n"
        "AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN); AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN\n"
        "(+ AWS_ROLE_SESSION_NAME); AWS_PROFILE in AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE\n"
        "(default ~/.aws/credentials, ~/.aws/config); AWS_CONTAINER_CREDENTIALS_FULL_URI or\n"
        "_RELATIVE_URI (+ AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]); EC2 IMDSv2\n"
        "(AWS_EC2_METADATA_SERVICE_ENDPOINT; off with AWS_EC2_METADATA_DISABLED=true).\n");
}

static const opt_def *find_option(const char *arg, size_t len)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        char flag[64];
        flag_name(&options[i], flag, sizeof(flag));
        if (strlen(flag) == len && strncmp(flag, arg, len) == 0)
            return &options[i];
    }
    return NULL;
}

/* AWS_ENDPOINT_URL_PERSONALIZE, else AWS_ENDPOINT_URL, as the AWS SDKs resolve them. */
static int load_endpoint_override(pgw_config *cfg, char *err, size_t err_len)
{
    const char *names[] = {"AWS_ENDPOINT_URL_PERSONALIZE", "AWS_ENDPOINT_URL"};
    for (size_t i = 0; i < 2; i++) {
        const char *v = getenv(names[i]);
        if (!v || !*v)
            continue;
        if (check_url(v, "http,https") != 0) {
            snprintf(err, err_len, "%s: not a valid http:// or https:// URL", names[i]);
            return -1;
        }
        cfg->personalize_endpoint = strdup(v);
        return 0;
    }
    return 0;
}

/* An empty string means unset. */
static void unset_if_empty(char **slot)
{
    if (*slot && !**slot) {
        free(*slot);
        *slot = NULL;
    }
}

/* The settings of "who may call" that only make sense together. */
static int check_auth(pgw_config *cfg, char *err, size_t err_len)
{
    unset_if_empty(&cfg->tls_cert);
    unset_if_empty(&cfg->tls_key);
    unset_if_empty(&cfg->tls_client_ca);
    unset_if_empty(&cfg->identity_header);
    unset_if_empty(&cfg->policy_file);
    if (!cfg->tls_cert != !cfg->tls_key) {
        snprintf(err, err_len, "%s: needs %s too", cfg->tls_cert ? "--tls-cert" : "--tls-key",
                 cfg->tls_cert ? "--tls-key" : "--tls-cert");
        return -1;
    }
    if (cfg->tls_client_ca && !cfg->tls_cert) {
        snprintf(err, err_len, "--tls-client-ca: needs --tls-cert and --tls-key");
        return -1;
    }
    if (cfg->tls_client_ca && cfg->identity_header) {
        /* Two sources of identity would let a header override a verified certificate. */
        snprintf(err, err_len,
                 "--identity-header: not allowed with --tls-client-ca (the certificate is the "
                 "identity)");
        return -1;
    }
    if (cfg->identity_header) {
        /* gRPC metadata keys and HTTP/2 header names are lowercase; pseudo-headers and grpc-*
         * are the transport's own. */
        for (char *p = cfg->identity_header; *p; p++) {
            *p = (char)tolower((unsigned char)*p);
            if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.') {
                snprintf(err, err_len, "--identity-header: not a valid header name");
                return -1;
            }
        }
        if (strncmp(cfg->identity_header, "grpc-", 5) == 0) {
            snprintf(err, err_len, "--identity-header: grpc-* headers are reserved");
            return -1;
        }
    }
    if (cfg->require_identity && !cfg->tls_client_ca && !cfg->identity_header) {
        snprintf(err, err_len, "--require-identity: needs --tls-client-ca or --identity-header");
        return -1;
    }
    if (cfg->tls_client_ca)
        cfg->require_identity = 1;
    if (strcmp(cfg->audit_log, "on") == 0)
        cfg->audit_enabled = 1;
    else if (strcmp(cfg->audit_log, "off") == 0)
        cfg->audit_enabled = 0;
    else if (strcmp(cfg->audit_log, "auto") == 0)
        cfg->audit_enabled = cfg->tls_client_ca || cfg->identity_header || cfg->policy_file;
    else {
        char q[PGW_TEXT_QUOTE_SIZE(16)];
        snprintf(err, err_len, "--audit-log: \"%s\" is not one of on, off, auto",
                 pgw_text_quote_str(cfg->audit_log, 16, q, sizeof(q)));
        return -1;
    }
    return 0;
}

/* The Redis TLS and password settings only make sense with a Redis URL; the files themselves
 * are checked (readable, valid PEM) when the tier is built, still at startup. */
static int check_redis(pgw_config *cfg, char *err, size_t err_len)
{
    unset_if_empty(&cfg->redis_ca_file);
    unset_if_empty(&cfg->redis_cert);
    unset_if_empty(&cfg->redis_key);
    unset_if_empty(&cfg->redis_password_file);
    const char *given = cfg->redis_ca_file         ? "--redis-ca-file"
                        : cfg->redis_cert          ? "--redis-cert"
                        : cfg->redis_key           ? "--redis-key"
                        : cfg->redis_password_file ? "--redis-password-file"
                                                   : NULL;
    if (given && !cfg->redis_url) {
        snprintf(err, err_len, "%s: needs --redis-url", given);
        return -1;
    }
    return 0;
}

pgw_config_result pgw_config_load(pgw_config *cfg, int argc, char **argv, char *err, size_t err_len)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < N_OPTIONS; i++) {
        if (options[i].default_value &&
            set_option(cfg, &options[i], options[i].default_value, "default", err, err_len) != 0)
            goto fail;
    }
    for (size_t i = 0; i < N_OPTIONS; i++) {
        char env[64];
        env_name(&options[i], env, sizeof(env));
        const char *v = getenv(env);
        if (v && set_option(cfg, &options[i], v, env, err, err_len) != 0)
            goto fail;
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_usage();
            pgw_config_cleanup(cfg);
            return PGW_CONFIG_HELP;
        }
        const char *eq = strchr(arg, '=');
        size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        const opt_def *o = strncmp(arg, "--", 2) == 0 ? find_option(arg, name_len) : NULL;
        if (!o) {
            char q[PGW_TEXT_QUOTE_SIZE(64)];
            snprintf(err, err_len, "unknown flag \"%s\" (see --help)",
                     pgw_text_quote(arg, name_len, 64, q, sizeof(q)));
            goto fail;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (!value) {
            if (i + 1 >= argc) {
                char q[PGW_TEXT_QUOTE_SIZE(64)];
                snprintf(err, err_len, "%s: missing value",
                         pgw_text_quote_str(arg, 64, q, sizeof(q)));
                goto fail;
            }
            value = argv[++i];
        }
        char flag[64];
        flag_name(o, flag, sizeof(flag));
        if (set_option(cfg, o, value, flag, err, err_len) != 0)
            goto fail;
    }
    if (cfg->grpc_addr[0] == '\0') {
        snprintf(err, err_len, "--grpc-addr: must not be empty");
        goto fail;
    }
    if (load_endpoint_override(cfg, err, err_len) != 0)
        goto fail;
    if (check_auth(cfg, err, err_len) != 0)
        goto fail;
    if (check_redis(cfg, err, err_len) != 0)
        goto fail;
    if (cfg->watch_poll_interval_s == 0)
        cfg->watch_poll_interval_s = cfg->cache_ttl_running_s;
    return PGW_CONFIG_OK;
fail:
    pgw_config_cleanup(cfg);
    return PGW_CONFIG_ERROR;
}

void pgw_config_cleanup(pgw_config *cfg)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        if (options[i].type != OPT_INT) {
            char **slot = (char **)((char *)cfg + options[i].offset);
            free(*slot);
            *slot = NULL;
        }
    }
    free(cfg->personalize_endpoint);
    cfg->personalize_endpoint = NULL;
}

/* The operator interface: command-line flags, each also settable as PGW_<FLAG_IN_UPPER_SNAKE>
 * (a flag on the command line wins over the environment). One table in config.c declares every
 * setting with its default and help text, so --help, the environment and validation agree. */
#ifndef PGW_CONFIG_H
#define PGW_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef struct pgw_config {
    /* listeners */
    char *grpc_addr;  /* host:port */
    char *http_addr;  /* host:port, or "" to disable the HTTP side */
    int grpc_threads; /* completion-queue threads */
    int grpc_max_recv_bytes;
    int shutdown_grace_ms;
    int core_dumps; /* 0: the process never writes a core file */
    char *log_level;
    int http_max_header_bytes;   /* request line + headers */
    int http_max_body_bytes;     /* request body */
    int http_request_timeout_ms; /* read/write inactivity, idle keep-alive, lookup deadline */

    /* upstream */
    int upstream_timeout_ms; /* per attempt, further bounded by the caller's deadline */
    int upstream_connect_timeout_ms;
    int upstream_max_attempts;
    int upstream_max_in_flight;   /* concurrent upstream fetches */
    int upstream_max_queued;      /* fetches waiting for one of those slots */
    int upstream_max_connections; /* connection pool bound per upstream host */
    int max_concurrent_calls;     /* calls waiting on the loop, all frontends */
    char *upstream_ca_file; /* extra CA bundle for https endpoints, or NULL for the system's */
    int credentials_refresh_window_s; /* refresh temporary credentials this long ahead */

    /* cache */
    char *redis_url; /* NULL: in-process cache only */
    int redis_timeout_ms;
    int redis_lease_ms;        /* cross-replica coalescing: see cache/fleet.h */
    char *redis_ca_file;       /* rediss://: CA bundle; NULL: the system's */
    char *redis_cert;          /* rediss://: client certificate chain, with redis_key */
    char *redis_key;           /* its private key */
    char *redis_password_file; /* the password when the URL has none; re-read at reconnects */
    int cache_ttl_terminal_s;
    int cache_ttl_running_s;
    int cache_ttl_not_found_s;
    int cache_stale_s;
    int cache_jitter_pct;
    int l1_max_entries;
    int l1_max_bytes;
    int l1_ttl_ms;

    /* watches (service/watch.h) */
    int watch_poll_interval_s; /* unset: --cache-ttl-running-s */
    int watch_max_streams;     /* open watch streams in all, both frontends */

    /* who may call (docs/security.md); every string NULL when unset */
    char *tls_cert;            /* PEM certificate chain: serve gRPC over TLS */
    char *tls_key;             /* PEM private key of tls_cert */
    char *tls_client_ca;       /* PEM CA bundle: mutual TLS, client certificates verified */
    int tls_poll_ms;           /* how often the TLS files are checked for changes */
    char *identity_header;     /* plain text: trusted header naming the caller (lowercase) */
    int require_identity;      /* calls without an identity -> UNAUTHENTICATED (always with mTLS) */
    char *policy_file;         /* authorization policy (JSON); NULL: every caller may read all */
    int policy_poll_ms;        /* how often the policy file is checked for changes */
    int rate_limit_per_caller; /* requests/s per caller identity; 0 = off */
    int rate_limit_per_caller_burst;
    int upstream_rate_limit; /* upstream calls/s for the whole gateway; 0 = off */
    int upstream_rate_limit_burst;
    int upstream_rate_limit_max_wait_ms;
    char *audit_log;   /* "on", "off" or "auto" (on when authentication or a policy is set) */
    int audit_enabled; /* audit_log resolved */

    /* AWS endpoint override, from AWS_ENDPOINT_URL_PERSONALIZE or AWS_ENDPOINT_URL (NULL:
     * derived from each ARN's partition and region). */
    char *personalize_endpoint;
} pgw_config;

typedef enum pgw_config_result {
    PGW_CONFIG_OK = 0,
    PGW_CONFIG_HELP,  /* --help was given: usage printed to stdout */
    PGW_CONFIG_ERROR, /* one line naming the bad setting written to err */
} pgw_config_result;

/* Fills `cfg` (defaults, then PGW_* environment, then argv). On error writes a one-line
 * message to err. The config owns its strings: release with pgw_config_cleanup(). */
pgw_config_result pgw_config_load(pgw_config *cfg, int argc, char **argv, char *err,
                                  size_t err_len);

void pgw_config_cleanup(pgw_config *cfg);

/* Checks a host:port listen address ("0.0.0.0:50051", "[::1]:80", "localhost:0"). */
int pgw_config_check_hostport(const char *value);

#endif

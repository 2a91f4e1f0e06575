/* personalize-gateway: wiring and lifecycle. Parses the config, builds the parts (event loop,
 * upstream client, lookup, frontends), serves until SIGTERM/SIGINT, then shuts down in order:
 * stop accepting, let in-flight calls finish within the grace period, release everything. */
#include <curl/curl.h>
#include <grpc/grpc.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/l1.h"
#include "cache/fleet.h"
#include "cache/redis_tier.h"
#include "cache/ttl.h"
#include "service/admission.h"
#include "service/audit.h"
#include "service/aws/credentials.h"
#include "service/aws/credentials_chain.h"
#include "service/aws/http_client.h"
#include "service/aws/personalize.h"
#include "service/call_limit.h"
#include "service/clock.h"
#include "service/config.h"
#include "service/grpc_log.h"
#include "service/grpc_server.h"
#include "service/health.h"
#include "service/http_server.h"
#include "service/log.h"
#include "service/lookup_internal.h"
#include "service/metrics.h"
#include "service/loop.h"
#include "service/policy.h"
#include "service/rate_limit.h"
#include "service/tls_reload.h"
#include "service/watch.h"

#define EXIT_CONFIG 2

typedef struct gateway {
    pgw_config cfg;
    pgw_loop *loop;
    pgw_http_client *http;
    pgw_credentials_provider *credentials;
    pgw_personalize *personalize;
    pgw_l1 *l1;
    pgw_redis_tier *redis;
    pgw_fleet *fleet;
    pgw_lookup *lookup;
    pgw_watch_registry *watch; /* WatchBatchInferenceJob and ?watch=true, over lookup */
    pgw_grpc_server *grpc;
    pgw_http_server *http_server; /* NULL when --http-addr is empty */
    pgw_policy *policy;           /* NULL: no --policy-file (every caller may read all) */
    pgw_rate_limit *rate_limit;   /* always set; limits off unless configured */
    pgw_audit *audit;             /* NULL: audit log off */
    pgw_admission *admission;     /* --upstream-max-in-flight / --upstream-max-queued */
    pgw_call_limit *call_limit;   /* --max-concurrent-calls, shared by both frontends */
    pgw_tls_reload *tls;          /* NULL: plain-text gRPC port; outlives the gRPC server */
} gateway;

static void on_policy_reload(int rc, const char *err, void *arg)
{
    gateway *g = arg;
    if (rc > 0)
        pgw_log(PGW_LOG_INFO, "authorization policy reloaded",
                json_pack("{s:s, s:I}", "file", g->cfg.policy_file, "rules",
                          (json_int_t)pgw_policy_rule_count(g->policy)));
    else
        pgw_log(PGW_LOG_ERROR, "authorization policy not reloaded: the previous one stays in force",
                json_pack("{s:s}", "error", err ? err : "unknown"));
}

static void on_tls_reload(int rc, const char *err, void *arg)
{
    gateway *g = arg;
    pgw_metrics_tls_reload(rc > 0);
    if (rc > 0) {
        char fingerprint[65];
        pgw_tls_reload_fingerprint(g->tls, fingerprint);
        int64_t not_after = pgw_tls_reload_not_after(g->tls);
        pgw_metrics_set_tls_certificate_expiry((double)not_after);
        pgw_log(PGW_LOG_INFO, "TLS certificate reloaded: new handshakes use it",
                json_pack("{s:s, s:s, s:I}", "file", g->cfg.tls_cert, "sha256", fingerprint,
                          "not_after", (json_int_t)not_after));
    } else {
        pgw_log(PGW_LOG_ERROR, "TLS files not reloaded: the previous certificate stays in force",
                json_pack("{s:s}", "error", err ? err : "unknown"));
    }
}

/* SIGHUP: re-read the policy and the TLS files now, changed or not. Runs on the loop thread,
 * theirs. */
static void loop_reload_policy(void *arg)
{
    gateway *g = arg;
    char err[512];
    if (g->tls) {
        int rc = pgw_tls_reload_check(g->tls, 0, err, sizeof(err));
        if (rc != 0)
            on_tls_reload(rc, rc < 0 ? err : NULL, g);
    }
    if (!g->policy) {
        if (!g->tls)
            pgw_log(PGW_LOG_INFO, "SIGHUP: no --policy-file or TLS files to reload", NULL);
        return;
    }
    int rc = pgw_policy_reload(g->policy, 0, err, sizeof(err));
    on_policy_reload(rc, rc < 0 ? err : NULL, g);
}

/* The gRPC port's TLS material, watched for rotation (service/tls_reload.h). */
static int build_tls(gateway *g, struct event_base *base, char *err, size_t err_len)
{
    if (!g->cfg.tls_cert)
        return 0;
    pgw_tls_reload_options topts = {
        .cert_file = g->cfg.tls_cert,
        .key_file = g->cfg.tls_key,
        .client_ca_file = g->cfg.tls_client_ca,
    };
    g->tls = pgw_tls_reload_new(&topts, err, err_len);
    if (!g->tls)
        return -1;
    if (pgw_tls_reload_watch(g->tls, base, g->cfg.tls_poll_ms, on_tls_reload, g) != 0) {
        snprintf(err, err_len, "--tls-cert: cannot watch the files");
        return -1;
    }
    pgw_metrics_set_tls_certificate_expiry((double)pgw_tls_reload_not_after(g->tls));
    return 0;
}

/* Who may call: the policy (a bad file stops the start), the rate limiter and the audit log. */
static int build_auth(gateway *g, struct event_base *base, char *err, size_t err_len)
{
    if (g->cfg.policy_file) {
        char why[400];
        g->policy = pgw_policy_load_file(g->cfg.policy_file, why, sizeof(why));
        if (!g->policy) {
            snprintf(err, err_len, "--policy-file: %s", why);
            return -1;
        }
        if (pgw_policy_watch(g->policy, base, g->cfg.policy_poll_ms, on_policy_reload, g) != 0) {
            snprintf(err, err_len, "--policy-file: cannot watch the file");
            return -1;
        }
        pgw_log(PGW_LOG_INFO, "authorization policy loaded",
                json_pack("{s:s, s:I}", "file", g->cfg.policy_file, "rules",
                          (json_int_t)pgw_policy_rule_count(g->policy)));
    }
    pgw_rate_limit_options ropts = {
        .caller_rate = g->cfg.rate_limit_per_caller,
        .caller_burst = g->cfg.rate_limit_per_caller_burst,
        .upstream_rate = g->cfg.upstream_rate_limit,
        .upstream_burst = g->cfg.upstream_rate_limit_burst,
        .upstream_max_wait_ms = g->cfg.upstream_rate_limit_max_wait_ms,
    };
    g->rate_limit = pgw_rate_limit_new(base, &ropts);
    if (g->cfg.audit_enabled)
        g->audit = pgw_audit_new(stdout);
    if (!g->rate_limit || (g->cfg.audit_enabled && !g->audit)) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    return 0;
}

/* Readiness and metrics follow the credentials: ready once the first arrive, unready when
 * they lapse without a replacement. Runs on the loop thread. */
static void on_credentials_change(const pgw_credentials *creds, void *arg)
{
    pgw_health_set(PGW_HEALTH_CREDENTIALS, creds != NULL);
    pgw_metrics_set_credentials(creds ? creds->source : "none",
                                creds ? (double)creds->expires_wall_ms / 1000.0 : 0);
}

/* The AWS SDKs' default chain (credentials_chain.h), fetching at once so that /readyz turns
 * ready without waiting for a first call. With no usable source the gateway still starts,
 * unready, and answers UNAVAILABLE saying why. */
static pgw_credentials_provider *make_credentials(gateway *g, struct event_base *base)
{
    pgw_credentials_chain_options copts = {
        .base = base,
        .http = g->http,
        .refresh_window_ms = (int64_t)g->cfg.credentials_refresh_window_s * 1000,
        .eager = 1,
        .on_change = on_credentials_change,
    };
    char why[512];
    pgw_credentials_source_kind kind;
    pgw_credentials_provider *p = pgw_credentials_chain_new(&copts, &kind, why, sizeof(why));
    if (p) {
        pgw_log(PGW_LOG_INFO, "AWS credentials source",
                json_pack("{s:s}", "source", pgw_credentials_source_name(kind)));
        return p;
    }
    pgw_log(PGW_LOG_ERROR, "no usable AWS credentials source", json_pack("{s:s}", "error", why));
    pgw_metrics_set_credentials("none", 0);
    return pgw_credentials_provider_none_new(why);
}

static void ttl_config_from_flags(const pgw_config *cfg, pgw_ttl_config *ttl)
{
    pgw_ttl_config_defaults(ttl);
    ttl->terminal_ttl_ms = (int64_t)cfg->cache_ttl_terminal_s * 1000;
    ttl->running_ttl_ms = (int64_t)cfg->cache_ttl_running_s * 1000;
    ttl->negative_ttl_ms = (int64_t)cfg->cache_ttl_not_found_s * 1000;
    ttl->stale_window_ms = (int64_t)cfg->cache_stale_s * 1000;
    ttl->jitter_pct = (uint32_t)cfg->cache_jitter_pct;
    ttl->l1_ttl_ms = cfg->l1_ttl_ms;
}

/* Redis connection events: one log line per attempt (the detail names host and reason, never
 * the password) and the connection counters. Runs on the loop thread. */
static void on_redis_event(pgw_redis_event ev, const char *detail, void *arg)
{
    static const char *const kinds[] = {"connected", "connect", "tls", "auth", NULL};
    if ((int)ev >= 0 && ev < PGW_REDIS_EVENT_DISCONNECTED && kinds[ev])
        pgw_metrics_redis_connection(kinds[ev]);
    if (ev == PGW_REDIS_EVENT_CONNECTED)
        pgw_log(PGW_LOG_INFO, "redis connected", json_pack("{s:s}", "detail", detail));
    else
        pgw_log(PGW_LOG_WARN,
                ev == PGW_REDIS_EVENT_DISCONNECTED ? "redis connection lost"
                                                   : "redis connection attempt failed",
                json_pack("{s:s, s:s}", "kind", pgw_redis_event_name(ev), "error", detail));
}

/* The in-process tier (unless --l1-max-entries 0) and, with --redis-url, the Redis tier. */
static int build_cache(gateway *g, struct event_base *base, char *err, size_t err_len)
{
    pgw_l1_config l1cfg;
    pgw_l1_config_defaults(&l1cfg);
    l1cfg.max_entries = (size_t)g->cfg.l1_max_entries;
    l1cfg.max_bytes = (size_t)g->cfg.l1_max_bytes;
    if (l1cfg.max_entries > 0 && l1cfg.max_bytes > 0) {
        g->l1 = pgw_l1_new(&l1cfg);
        if (!g->l1) {
            snprintf(err, err_len, "cannot create the in-process cache");
            return -1;
        }
    }
    if (g->cfg.redis_url) {
        pgw_redis_tier_config rcfg;
        pgw_redis_tier_config_defaults(&rcfg);
        rcfg.url = g->cfg.redis_url;
        rcfg.command_timeout_ms = g->cfg.redis_timeout_ms;
        /* Replicas coordinate their fetches through Redis: the fleet hears the others'
         * notices on the tier's subscriber connection. */
        pgw_fleet_config fcfg;
        pgw_fleet_config_defaults(&fcfg);
        fcfg.lease_ms = g->cfg.redis_lease_ms;
        g->fleet = pgw_fleet_new(base, &fcfg);
        if (!g->fleet) {
            snprintf(err, err_len, "cannot create the fleet coordinator");
            return -1;
        }
        rcfg.subscribe_channel = PGW_REDIS_FILL_CHANNEL;
        rcfg.on_message = pgw_fleet_on_message;
        rcfg.on_subscription = pgw_fleet_on_subscription;
        rcfg.message_ud = g->fleet;
        rcfg.ca_file = g->cfg.redis_ca_file;
        rcfg.cert_file = g->cfg.redis_cert;
        rcfg.key_file = g->cfg.redis_key;
        rcfg.password_file = g->cfg.redis_password_file;
        rcfg.on_event = on_redis_event;
        g->redis = pgw_redis_tier_new(base, &rcfg, err, err_len);
        if (!g->redis)
            return -1;
        pgw_fleet_set_redis(g->fleet, g->redis);
    }
    return 0;
}

static int build(gateway *g, char *err, size_t err_len)
{
    g->loop = pgw_loop_new();
    if (!g->loop) {
        snprintf(err, err_len, "cannot create the event loop");
        return -1;
    }
    struct event_base *base = pgw_loop_base(g->loop);
    pgw_http_client_options hopts = {
        .connect_timeout_ms = g->cfg.upstream_connect_timeout_ms,
        .ca_file = g->cfg.upstream_ca_file,
        .max_body_bytes = 1 << 20,
        .max_host_connections = g->cfg.upstream_max_connections,
        /* Transfers (a burst of misses) yield to cache hits' work on the loop. */
        .event_priority = PGW_LOOP_PRIORITY_BULK,
    };
    g->http = pgw_http_client_new(base, &hopts);
    g->credentials = g->http ? make_credentials(g, base) : NULL;
    pgw_personalize_options popts = {
        .endpoint_override = g->cfg.personalize_endpoint,
        .attempt_timeout_ms = g->cfg.upstream_timeout_ms,
        .max_attempts = g->cfg.upstream_max_attempts,
    };
    if (g->http && g->credentials)
        g->personalize = pgw_personalize_new(base, g->http, g->credentials, &popts);
    if (!g->personalize) {
        snprintf(err, err_len, "cannot create the upstream client");
        return -1;
    }
    if (build_cache(g, base, err, err_len) != 0)
        return -1;
    if (build_auth(g, base, err, err_len) != 0)
        return -1;
    pgw_admission_options aopts = {
        .max_in_flight = g->cfg.upstream_max_in_flight,
        .max_queued = g->cfg.upstream_max_queued,
        .event_priority = PGW_LOOP_PRIORITY_BULK,
    };
    g->admission = pgw_admission_new(base, &aopts);
    g->call_limit = pgw_call_limit_new(g->cfg.max_concurrent_calls);
    if (!g->admission || !g->call_limit) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    pgw_lookup_options lopts = {
        .base = base,
        .personalize = g->personalize,
        .l1 = g->l1,
        .redis = g->redis,
        .fleet = g->fleet,
        .policy = g->policy,
        .rate_limit = g->rate_limit,
        .audit = g->audit,
        .admission = g->admission,
    };
    ttl_config_from_flags(&g->cfg, &lopts.ttl);
    g->lookup = pgw_lookup_new(&lopts);
    if (!g->lookup) {
        snprintf(err, err_len, "cannot create the lookup");
        return -1;
    }
    pgw_watch_options wopts = {
        .base = base,
        .lookup = g->lookup,
        .fleet = g->redis ? g->fleet : NULL,
        .poll_interval_ms = g->cfg.watch_poll_interval_s * 1000,
        .max_streams = g->cfg.watch_max_streams,
    };
    g->watch = pgw_watch_registry_new(&wopts);
    if (!g->watch) {
        snprintf(err, err_len, "cannot create the watch registry");
        return -1;
    }
    /* A change one replica's poll saw reaches every replica's watchers (pub/sub). */
    if (g->fleet)
        pgw_fleet_set_listener(g->fleet, pgw_watch_on_fill, g->watch);
    /* HTTP before gRPC: a gRPC server that is never started must not be left bound. */
    if (g->cfg.http_addr && g->cfg.http_addr[0]) {
        pgw_http_server_options hsopts = {
            .addr = g->cfg.http_addr,
            .loop = g->loop,
            .lookup = g->lookup,
            .max_header_bytes = (size_t)g->cfg.http_max_header_bytes,
            .max_body_bytes = (size_t)g->cfg.http_max_body_bytes,
            .request_timeout_ms = g->cfg.http_request_timeout_ms,
            .identity_header = g->cfg.identity_header,
            .require_identity = g->cfg.require_identity,
            .call_limit = g->call_limit,
            .watch = g->watch,
        };
        g->http_server = pgw_http_server_new(&hsopts, err, err_len);
        if (!g->http_server)
            return -1;
    }
    if (build_tls(g, base, err, err_len) != 0)
        return -1;
    pgw_grpc_server_options gopts = {
        .addr = g->cfg.grpc_addr,
        .threads = g->cfg.grpc_threads,
        .max_recv_bytes = g->cfg.grpc_max_recv_bytes,
        .loop = g->loop,
        .lookup = g->lookup,
        .tls_cert_file = g->cfg.tls_cert,
        .tls_key_file = g->cfg.tls_key,
        .tls_client_ca_file = g->cfg.tls_client_ca,
        .tls = g->tls,
        .identity_header = g->cfg.identity_header,
        .require_identity = g->cfg.require_identity,
        .audit = g->audit,
        .call_limit = g->call_limit,
        .watch = g->watch,
    };
    g->grpc = pgw_grpc_server_new(&gopts, err, err_len);
    return g->grpc ? 0 : -1;
}

/* Shutdown, on the loop thread: every watch stream ends UNAVAILABLE (so its client reconnects
 * to another replica) and no new one opens. */
static void loop_end_watches(void *arg)
{
    gateway *g = arg;
    if (g->watch)
        pgw_watch_shutdown(g->watch);
}

/* Frees the loop-owned parts; runs on the loop thread, after the frontends stopped. */
static void release_loop_parts(void *arg)
{
    gateway *g = arg;
    /* First: closing its connections cancels their lookups, which must still exist. */
    pgw_http_server_free(g->http_server);
    g->http_server = NULL;
    /* Before lookup: its groups may hold polls. No more fill notices reach it after this. */
    if (g->fleet)
        pgw_fleet_set_listener(g->fleet, NULL, NULL);
    pgw_watch_registry_free(g->watch);
    g->watch = NULL;
    pgw_lookup_free(g->lookup);
    pgw_admission_free(g->admission); /* after lookup, which holds tickets */
    g->admission = NULL;
    pgw_policy_free(g->policy);         /* after lookup, which checks it */
    pgw_rate_limit_free(g->rate_limit); /* after lookup, which waits on it */
    g->policy = NULL;
    g->rate_limit = NULL;
    pgw_redis_tier_free(g->redis); /* suppresses its callbacks: then the fleet may go */
    pgw_fleet_free(g->fleet);
    g->fleet = NULL;
    pgw_l1_free(g->l1);
    pgw_personalize_free(g->personalize);
    pgw_credentials_provider_free(g->credentials);
    pgw_http_client_free(g->http);
    pgw_tls_reload_unwatch(g->tls); /* its timer is on the loop; the reloader lives on */
    g->lookup = NULL;
    g->redis = NULL;
    g->l1 = NULL;
    g->personalize = NULL;
    g->credentials = NULL;
    g->http = NULL;
}

static void teardown(gateway *g)
{
    pgw_grpc_server_free(g->grpc);
    g->grpc = NULL;
    if (g->loop) {
        if (pgw_loop_post(g->loop, release_loop_parts, g) != 0)
            release_loop_parts(g);
        pgw_loop_stop(g->loop);
        release_loop_parts(g); /* no-op when the loop already ran it */
        pgw_loop_free(g->loop);
    }
    pgw_audit_free(g->audit); /* last: every frontend and lookup that wrote to it is gone */
    g->audit = NULL;
    pgw_call_limit_free(g->call_limit);
    g->call_limit = NULL;
}

/* Raises the soft limit on open files to the hard one (as Go's runtime does): every
 * connection is a file descriptor, and gRPC core 1.51 stops listening for good when accept()
 * runs out of them (service/grpc_log.h), so the soft default of 1024 would cap the callers at
 * about a thousand and then take the port down. Returns the limit now in force. */
static long raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = rl;
        want.rlim_cur = rl.rlim_max;
        /* An "unlimited" hard limit is still capped by the kernel (fs.nr_open). */
        if (want.rlim_cur == RLIM_INFINITY || want.rlim_cur > (rlim_t)1 << 20)
            want.rlim_cur = (rlim_t)1 << 20;
        if (want.rlim_cur > rl.rlim_cur && setrlimit(RLIMIT_NOFILE, &want) == 0)
            rl = want;
    }
    return rl.rlim_cur == RLIM_INFINITY ? -1 : (long)rl.rlim_cur;
}

int main(int argc, char **argv)
{
    /* Block the shutdown signals (and SIGHUP, "reload the policy and TLS files") before any thread
     * exists (gRPC's included), so they are taken only by sigwait below and never interrupt a
     * library. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    gateway g = {0};
    char err[512];
    switch (pgw_config_load(&g.cfg, argc, argv, err, sizeof(err))) {
    case PGW_CONFIG_HELP:
        return 0;
    case PGW_CONFIG_ERROR:
        fprintf(stderr, "personalize-gateway: %s\n", err);
        return EXIT_CONFIG;
    case PGW_CONFIG_OK:
        break;
    }
    pgw_log_set_level_name(g.cfg.log_level);
    if (!g.cfg.core_dumps) {
        /* The process holds AWS keys and session tokens: a core file would carry them to
         * disk, past every care taken to keep them out of logs. */
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
    }
    long max_files = raise_fd_limit();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    pgw_grpc_log_install();
    grpc_init();

    int rc = 0;
    if (build(&g, err, sizeof(err)) != 0) {
        fprintf(stderr, "personalize-gateway: %s\n", err);
        rc = EXIT_CONFIG;
        goto out;
    }
    if (pgw_loop_start(g.loop) != 0 || pgw_grpc_server_start(g.grpc) != 0) {
        fprintf(stderr, "personalize-gateway: cannot start threads\n");
        rc = 1;
        goto out;
    }
    char grpc_listen[300];
    snprintf(grpc_listen, sizeof(grpc_listen), "%.*s:%d",
             (int)(strrchr(g.cfg.grpc_addr, ':') - g.cfg.grpc_addr), g.cfg.grpc_addr,
             pgw_grpc_server_port(g.grpc));
    char http_listen[300] = "";
    if (g.http_server)
        snprintf(http_listen, sizeof(http_listen), "%.*s:%d",
                 (int)(strrchr(g.cfg.http_addr, ':') - g.cfg.http_addr), g.cfg.http_addr,
                 pgw_http_server_port(g.http_server));
    pgw_log(PGW_LOG_INFO, "personalize-gateway started",
            json_pack("{s:s, s:s, s:s?, s:s?, s:s?, s:s?, s:s, s:I}", "version", PGW_VERSION,
                      "grpc_addr", grpc_listen, "http_addr", g.http_server ? http_listen : NULL,
                      "region", getenv("AWS_REGION"), "endpoint_override",
                      g.cfg.personalize_endpoint, "redis", g.cfg.redis_url ? "configured" : NULL,
                      "cache", g.cfg.redis_url ? "l1+redis" : "l1", "max_open_files",
                      (json_int_t)max_files));

    pgw_health_set(PGW_HEALTH_LISTENING, 1);

    int sig = 0;
    while (sigwait(&signals, &sig) == 0 && sig == SIGHUP) {
        if (pgw_loop_post(g.loop, loop_reload_policy, &g) != 0)
            break;
    }
    /* Unready first, so probes and load balancers stop sending, then drain. */
    pgw_health_set(PGW_HEALTH_SHUTTING_DOWN, 1);
    pgw_log(PGW_LOG_INFO, "shutting down",
            json_pack("{s:s, s:i, s:i}", "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                      "in_flight", pgw_grpc_server_in_flight(g.grpc), "grace_ms",
                      g.cfg.shutdown_grace_ms));
    int64_t drain_until = pgw_now_mono_ms() + g.cfg.shutdown_grace_ms;
    if (g.http_server)
        pgw_http_server_stop_accepting(g.http_server);
    pgw_grpc_server_stop_accepting(g.grpc); /* Health/Watch streams hear NOT_SERVING */
    /* Readiness has flipped: now the watch streams end, UNAVAILABLE, and their clients go to
     * a replica that is ready. */
    if (pgw_loop_post(g.loop, loop_end_watches, &g) != 0)
        pgw_log(PGW_LOG_WARN, "watch streams not ended: the loop has stopped", NULL);
    pgw_grpc_server_shutdown(g.grpc, g.cfg.shutdown_grace_ms);
    if (g.http_server) {
        int64_t left = drain_until - pgw_now_mono_ms();
        pgw_http_server_shutdown(g.http_server, left > 0 ? (int)left : 0);
    }
    pgw_log(PGW_LOG_INFO, "stopped", NULL);
out:
    teardown(&g);
    grpc_shutdown();
    pgw_tls_reload_free(g.tls); /* after gRPC let go of the credentials that call it */
    curl_global_cleanup();
    pgw_config_cleanup(&g.cfg);
    return rc;
}

/* personalize-gateway: wiring and lifecycle. Parses the config, builds the parts (event loop,
 * upstream client, lookup, frontends), serves until SIGTERM/SIGINT, then shuts down in order:
 * stop accepting, let in-flight calls finish within the grace period, release everything. */
#include <curl/curl.h>
#include <grpc/grpc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/l1.h"
#include "cache/redis_tier.h"
#include "cache/ttl.h"
#include "service/aws/credentials.h"
#include "service/aws/http_client.h"
#include "service/aws/personalize.h"
#include "service/config.h"
#include "service/grpc_server.h"
#include "service/log.h"
#include "service/lookup_internal.h"
#include "service/loop.h"

#define EXIT_CONFIG 2

typedef struct gateway {
    pgw_config cfg;
    pgw_loop *loop;
    pgw_http_client *http;
    pgw_credentials_provider *credentials;
    pgw_personalize *personalize;
    pgw_l1 *l1;
    pgw_redis_tier *redis;
    pgw_lookup *lookup;
    pgw_grpc_server *grpc;
} gateway;

static pgw_credentials_provider *make_credentials(void)
{
    pgw_credentials_provider *p = pgw_credentials_provider_env_new();
    if (p)
        return p;
    return pgw_credentials_provider_none_new(
        "no credentials source is configured (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)");
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
        g->redis = pgw_redis_tier_new(base, &rcfg, err, err_len);
        if (!g->redis)
            return -1;
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
    };
    g->http = pgw_http_client_new(base, &hopts);
    g->credentials = make_credentials();
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
    pgw_lookup_options lopts = {
        .base = base,
        .personalize = g->personalize,
        .l1 = g->l1,
        .redis = g->redis,
    };
    ttl_config_from_flags(&g->cfg, &lopts.ttl);
    g->lookup = pgw_lookup_new(&lopts);
    if (!g->lookup) {
        snprintf(err, err_len, "cannot create the lookup");
        return -1;
    }
    pgw_grpc_server_options gopts = {
        .addr = g->cfg.grpc_addr,
        .threads = g->cfg.grpc_threads,
        .max_recv_bytes = g->cfg.grpc_max_recv_bytes,
        .loop = g->loop,
        .lookup = g->lookup,
    };
    g->grpc = pgw_grpc_server_new(&gopts, err, err_len);
    return g->grpc ? 0 : -1;
}

/* Frees the loop-owned parts; runs on the loop thread, after the frontends stopped. */
static void release_loop_parts(void *arg)
{
    gateway *g = arg;
    pgw_lookup_free(g->lookup);
    pgw_redis_tier_free(g->redis);
    pgw_l1_free(g->l1);
    pgw_personalize_free(g->personalize);
    pgw_credentials_provider_free(g->credentials);
    pgw_http_client_free(g->http);
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
}

int main(int argc, char **argv)
{
    /* Block the shutdown signals before any thread exists (gRPC's included), so they are
     * taken only by sigwait below and never interrupt a library. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
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
    curl_global_init(CURL_GLOBAL_DEFAULT);
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
    pgw_log(PGW_LOG_INFO, "personalize-gateway started",
            json_pack("{s:s, s:s, s:s?, s:s?, s:s?, s:s}", "version", PGW_VERSION, "grpc_addr",
                      grpc_listen, "region", getenv("AWS_REGION"), "endpoint_override",
                      g.cfg.personalize_endpoint, "redis", g.cfg.redis_url ? "configured" : NULL,
                      "cache", g.cfg.redis_url ? "l1+redis" : "l1"));

    int sig = 0;
    sigwait(&signals, &sig);
    pgw_log(PGW_LOG_INFO, "shutting down",
            json_pack("{s:s, s:i, s:i}", "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                      "in_flight", pgw_grpc_server_in_flight(g.grpc), "grace_ms",
                      g.cfg.shutdown_grace_ms));
    pgw_grpc_server_shutdown(g.grpc, g.cfg.shutdown_grace_ms);
    pgw_log(PGW_LOG_INFO, "stopped", NULL);
out:
    teardown(&g);
    grpc_shutdown();
    curl_global_cleanup();
    pgw_config_cleanup(&g.cfg);
    return rc;
}

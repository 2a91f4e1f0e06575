/* Process-wide serving state behind /healthz, /readyz and grpc.health.v1.Health: ready means
 * listening, AWS credentials obtained, and not shutting down. A Redis outage does not make
 * the gateway unready (it serves without Redis). Any thread. */
#ifndef PGW_HEALTH_H
#define PGW_HEALTH_H

#include <stdint.h>

typedef enum pgw_health_flag {
    PGW_HEALTH_LISTENING = 1u << 0,     /* the frontends are accepting calls */
    PGW_HEALTH_CREDENTIALS = 1u << 1,   /* AWS credentials are available */
    PGW_HEALTH_SHUTTING_DOWN = 1u << 2, /* SIGTERM seen: drain, take no new work */
    /* gRPC core stopped accepting connections on the gRPC port for good (its listener gives
     * up on an accept error such as file descriptors exhausted): only a restart serves new
     * callers again, so the process reports itself not alive. */
    PGW_HEALTH_GRPC_LISTENER_LOST = 1u << 3,
} pgw_health_flag;

/* Sets or clears a flag; bumps the version when the state changes. */
void pgw_health_set(pgw_health_flag flag, int on);

/* Nonzero when ready to serve. If not and `why` is non-NULL, *why names the first missing
 * condition (a static string). */
int pgw_health_ready(const char **why);

/* Nonzero while the process can serve (GET /healthz, the liveness probe): a process that
 * cannot recover by itself reports not alive, so that it is restarted. If not and `why` is
 * non-NULL, *why says why (a static string). */
int pgw_health_alive(const char **why);

/* Changes every time readiness may have changed: the gRPC Watch stream polls it. */
uint64_t pgw_health_version(void);

#endif

/* grpc_log: gRPC core's own log lines, as the gateway's JSON log lines (stdout, one object per
 * line, like every other line) instead of gRPC's text format on stderr; and the one gRPC log
 * line that means the process must be restarted.
 *
 * gRPC core 1.51 (Debian 12) stops listening on a port for good when accept() fails with
 * anything but EAGAIN/EINTR/ECONNABORTED, file descriptors exhausted (EMFILE) included: it
 * logs "Failed accept4: ..." and never polls the listening socket again, so new callers hang
 * in the listen backlog while the process looks healthy. That line sets
 * PGW_HEALTH_GRPC_LISTENER_LOST: GET /healthz (the liveness probe) and readiness fail and say
 * why, so Kubernetes restarts the container. */
#ifndef PGW_GRPC_LOG_H
#define PGW_GRPC_LOG_H

/* Installs the log function (gpr_set_log_function). Call once, before grpc_init. */
void pgw_grpc_log_install(void);

#endif

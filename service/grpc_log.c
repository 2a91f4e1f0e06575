#include "service/grpc_log.h"

#include <grpc/support/log.h>
#include <string.h>

#include "service/health.h"
#include "service/log.h"

/* Runs on whichever gRPC thread logs, possibly under gRPC's own locks: it must not call into
 * gRPC, and does not. */
static void on_grpc_log(gpr_log_func_args *a)
{
    const char *msg = a->message ? a->message : "";
    const char *file = a->file ? a->file : "";
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    if (strncmp(msg, "Failed accept4", 14) == 0 && strncmp(base, "tcp_server", 10) == 0) {
        pgw_health_set(PGW_HEALTH_GRPC_LISTENER_LOST, 1);
        pgw_log(PGW_LOG_ERROR,
                "gRPC port stopped accepting connections: restart the process (GET /healthz "
                "now fails)",
                json_pack("{s:s, s:s, s:i}", "grpc_message", msg, "file", base, "line", a->line));
        return;
    }
    pgw_log_level level = a->severity == GPR_LOG_SEVERITY_ERROR  ? PGW_LOG_ERROR
                          : a->severity == GPR_LOG_SEVERITY_INFO ? PGW_LOG_INFO
                                                                 : PGW_LOG_DEBUG;
    pgw_log(level, "grpc core",
            json_pack("{s:s, s:s, s:i}", "grpc_message", msg, "file", base, "line", a->line));
}

void pgw_grpc_log_install(void)
{
    gpr_set_log_function(on_grpc_log);
}

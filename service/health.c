#include "service/health.h"

#include <stdatomic.h>
#include <stddef.h>

#define GRPC_LISTENER_LOST                                                                         \
    "the gRPC port stopped accepting connections (gRPC core gave up after an accept error, "       \
    "e.g. file descriptors exhausted); restart the process"

static atomic_uint flags;
static atomic_uint_fast64_t version;

void pgw_health_set(pgw_health_flag flag, int on)
{
    unsigned before =
        on ? atomic_fetch_or(&flags, (unsigned)flag) : atomic_fetch_and(&flags, ~(unsigned)flag);
    if (((before & flag) != 0) != (on != 0))
        atomic_fetch_add(&version, 1);
}

int pgw_health_ready(const char **why)
{
    unsigned f = atomic_load(&flags);
    const char *reason = NULL;
    if (f & PGW_HEALTH_SHUTTING_DOWN)
        reason = "shutting down";
    else if (f & PGW_HEALTH_GRPC_LISTENER_LOST)
        reason = GRPC_LISTENER_LOST;
    else if (!(f & PGW_HEALTH_LISTENING))
        reason = "not listening yet";
    else if (!(f & PGW_HEALTH_CREDENTIALS))
        reason = "no AWS credentials yet";
    if (why)
        *why = reason;
    return reason == NULL;
}

uint64_t pgw_health_version(void)
{
    return atomic_load(&version);
}

int pgw_health_alive(const char **why)
{
    unsigned f = atomic_load(&flags);
    const char *reason = (f & PGW_HEALTH_GRPC_LISTENER_LOST) ? GRPC_LISTENER_LOST : NULL;
    if (why)
        *why = reason;
    return reason == NULL;
}

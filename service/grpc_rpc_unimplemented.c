/* The catch-all for methods the gateway does not serve: UNIMPLEMENTED at once (gRPC core
 * would otherwise leave such a call waiting until its deadline). */
#include "service/grpc_rpc.h"

static void on_new(pgw_grpc_call *c)
{
    pgw_grpc_call_answer(c, GRPC_STATUS_UNIMPLEMENTED, "unknown method", NULL);
    pgw_grpc_call_unref(c);
}

const pgw_grpc_method pgw_grpc_unimplemented_method = {
    .name = "unimplemented",
    .path = NULL,
    .posted_per_thread = 4,
    .on_new = on_new,
};

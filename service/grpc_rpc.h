/* The gRPC methods the server serves, one state machine per file (grpc_call.h explains the
 * table). grpc_server.c lists them; a new rpc adds its file and one line there. */
#ifndef PGW_GRPC_RPC_H
#define PGW_GRPC_RPC_H

#include "service/grpc_call.h"

#define PGW_GRPC_SERVICE "personalize_gateway.v1.PersonalizeGateway"

extern const pgw_grpc_method pgw_grpc_describe_method;           /* grpc_rpc_describe.c */
extern const pgw_grpc_method pgw_grpc_watch_job_method;          /* grpc_rpc_watch.c */
extern const pgw_grpc_method pgw_grpc_health_check_method;       /* grpc_rpc_health.c */
extern const pgw_grpc_method pgw_grpc_health_watch_method;       /* grpc_rpc_health.c */
extern const pgw_grpc_method pgw_grpc_reflection_v1alpha_method; /* grpc_rpc_reflection.c */
extern const pgw_grpc_method pgw_grpc_reflection_v1_method;      /* grpc_rpc_reflection.c */
extern const pgw_grpc_method pgw_grpc_unimplemented_method;      /* grpc_rpc_unimplemented.c */

#endif

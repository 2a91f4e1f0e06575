/* The gRPC frontend, on the gRPC core C API: completion-queue threads receive calls, decode the
 * request, and hand a lookup to the event loop; the lookup's callback (on the loop thread)
 * sends the answer with grpc_call_start_batch, which is thread-safe.
 *
 * The server (grpc_server.c) owns the listener, the completion-queue threads and a table of
 * methods; each rpc is one state machine in a file of its own, on the call core of
 * grpc_call.h:
 *   grpc_rpc_describe.c    personalize_gateway.v1.PersonalizeGateway/DescribeBatchInferenceJob
 *   grpc_rpc_watch.c       .../WatchBatchInferenceJob (server streaming, service/watch.h)
 *   grpc_rpc_health.c      grpc.health.v1.Health/Check and /Watch
 *   grpc_rpc_reflection.c  grpc.reflection.v1alpha and v1 ServerReflection/ServerReflectionInfo
 *   grpc_rpc_unimplemented.c  every other method: UNIMPLEMENTED */
#ifndef PGW_GRPC_SERVER_H
#define PGW_GRPC_SERVER_H

#include "service/loop.h"
#include "service/lookup.h"

struct pgw_audit;
struct pgw_call_limit;
struct pgw_tls_reload;
struct pgw_watch_registry;
typedef struct pgw_grpc_server pgw_grpc_server;

typedef struct pgw_grpc_server_options {
    const char *addr;   /* host:port; port 0 picks a free one */
    int threads;        /* completion-queue threads */
    int max_recv_bytes; /* larger request messages are refused by gRPC core */
    pgw_loop *loop;     /* borrowed */
    pgw_lookup *lookup; /* borrowed; used on the loop thread only */

    /* Who may call (docs/security.md). TLS when tls_cert_file is set; with tls_client_ca_file
     * too, mutual TLS: client certificates are requested and verified against that CA, and a
     * call whose peer presented none gets UNAUTHENTICATED. */
    const char *tls_cert_file;      /* PEM chain, or NULL for plain text */
    const char *tls_key_file;       /* PEM key of tls_cert_file */
    const char *tls_client_ca_file; /* PEM CA bundle, or NULL: no client certificates */
    struct pgw_tls_reload *tls;     /* borrowed; the material of those files, kept current
                                       (service/tls_reload.h); required with tls_cert_file */
    const char *identity_header;    /* plain text: trusted header with the identity, or NULL */
    int require_identity;           /* no identity -> UNAUTHENTICATED before any lookup */
    struct pgw_audit *audit;        /* borrowed; NULL: no audit lines for refused calls */
    /* borrowed; --max-concurrent-calls, taken by every call that goes to the loop (not by
     * fresh L1 hits); NULL: no bound */
    struct pgw_call_limit *call_limit;
    /* borrowed, used on the loop thread only; NULL: WatchBatchInferenceJob answers
     * UNIMPLEMENTED */
    struct pgw_watch_registry *watch;
} pgw_grpc_server_options;

/* Creates the server and binds its port (call after grpc_init), reading the TLS files if set.
 * Returns NULL with a one-line reason in err naming the flag at fault. */
pgw_grpc_server *pgw_grpc_server_new(const pgw_grpc_server_options *options, char *err,
                                     size_t err_len);

/* The bound port. */
int pgw_grpc_server_port(const pgw_grpc_server *server);

/* Starts serving: starts the server and the completion-queue threads. Returns 0 or -1. */
int pgw_grpc_server_start(pgw_grpc_server *server);

/* Stops accepting calls (GOAWAY) and tells Health/Watch streams NOT_SERVING; the calls in
 * flight go on. Idempotent; any thread. */
void pgw_grpc_server_stop_accepting(pgw_grpc_server *server);

/* pgw_grpc_server_stop_accepting, then lets in-flight calls finish for up to grace_ms, then
 * cancels the rest; returns when every call is done and the threads have exited. The loop must
 * still run. */
void pgw_grpc_server_shutdown(pgw_grpc_server *server, int grace_ms);

/* Frees a server that was shut down (or never started). */
void pgw_grpc_server_free(pgw_grpc_server *server);

/* Calls in flight now (any thread). */
int pgw_grpc_server_in_flight(const pgw_grpc_server *server);

#endif

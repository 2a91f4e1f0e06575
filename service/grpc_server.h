/* The gRPC frontend, on the gRPC core C API: completion-queue threads receive calls, decode the
 * request, and hand a lookup to the event loop; the lookup's callback (on the loop thread)
 * sends the answer with grpc_call_start_batch, which is thread-safe. One small state machine
 * per call handles the caller cancelling or its deadline passing. Unknown methods get
 * UNIMPLEMENTED. */
#ifndef PGW_GRPC_SERVER_H
#define PGW_GRPC_SERVER_H

#include "service/loop.h"
#include "service/lookup.h"

struct pgw_audit;
struct pgw_call_limit;
struct pgw_tls_reload;
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
} pgw_grpc_server_options;

/* Creates the server and binds its port (call after grpc_init), with TLS if set.
 * Returns NULL with a one-line reason in err naming the flag at fault. */
pgw_grpc_server *pgw_grpc_server_new(const pgw_grpc_server_options *options, char *err,
                                     size_t err_len);

/* The bound port. */
int pgw_grpc_server_port(const pgw_grpc_server *server);

/* Starts serving: starts the server and the completion-queue threads. Returns 0 or -1. */
int pgw_grpc_server_start(pgw_grpc_server *server);

/* Stops accepting calls, lets in-flight calls finish for up to grace_ms, then cancels the rest;
 * returns when every call is done and the threads have exited. The loop must still run. */
void pgw_grpc_server_shutdown(pgw_grpc_server *server, int grace_ms);

/* Frees a server that was shut down (or never started). */
void pgw_grpc_server_free(pgw_grpc_server *server);

/* Calls in flight now (any thread). */
int pgw_grpc_server_in_flight(const pgw_grpc_server *server);

#endif

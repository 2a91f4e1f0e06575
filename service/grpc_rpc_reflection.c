/* grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo and its v1 twin (the same
 * messages on the wire): a bidirectional stream of questions about the services, answered from
 * the descriptor set compiled into the binary (grpc_reflection.h), so grpcurl, Postman and
 * friends need no .proto files.
 *
 * One question at a time: receive, answer, receive again (one batch in flight, so a client
 * that sends faster than it reads is paced by gRPC's flow control); the client's half-close
 * ends the stream OK. Everything runs on the completion-queue threads: the descriptors are
 * immutable once decoded and need neither the loop nor a lock after that. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "service/grpc_reflection.h"
#include "service/grpc_rpc.h"

/* The method's state. The descriptor set is decoded at the first question, not at start: most
 * gateways are never asked, and decoded it is ~16 kB of heap per method that an idle gateway
 * would hold (bench/README.md, "Idle memory"). The lock is taken once per question. */
typedef struct {
    pthread_mutex_t lock;
    pgw_reflection *reflection; /* owned; NULL until the first question */
} lazy_reflection;

static int server_init(pgw_grpc_server *server, void **state, char *err, size_t err_len)
{
    lazy_reflection *lazy = calloc(1, sizeof(*lazy));
    if (!lazy || pthread_mutex_init(&lazy->lock, NULL) != 0) {
        free(lazy);
        snprintf(err, err_len, "out of memory for server reflection");
        return -1;
    }
    *state = lazy;
    return 0;
}

static void server_free(void *state)
{
    lazy_reflection *lazy = state;
    if (!lazy)
        return;
    pgw_reflection_free(lazy->reflection);
    pthread_mutex_destroy(&lazy->lock);
    free(lazy);
}

/* The decoded set (immutable once made, so used without the lock), or NULL when memory runs out
 * (tests/unit/test_grpc_reflection.c proves the built-in set decodes). */
static const pgw_reflection *reflection_of(lazy_reflection *lazy)
{
    pthread_mutex_lock(&lazy->lock);
    if (!lazy->reflection)
        lazy->reflection = pgw_reflection_new_builtin();
    const pgw_reflection *r = lazy->reflection;
    pthread_mutex_unlock(&lazy->lock);
    return r;
}

static void on_new(pgw_grpc_call *c)
{
    if (pgw_grpc_call_watch_close(c) == 0)
        pgw_grpc_call_recv(c);
    pgw_grpc_call_unref(c); /* from now on the batches hold the call */
}

static void on_recv_done(pgw_grpc_call *c, int ok)
{
    if (!ok) /* the call is over */
        return;
    if (!c->recv_message) { /* the client is done asking */
        pgw_grpc_call_send(c, NULL, 1, GRPC_STATUS_OK, NULL);
        return;
    }
    const pgw_reflection *reflection = reflection_of(c->method_state);
    if (!reflection) {
        pgw_grpc_call_send(c, NULL, 1, GRPC_STATUS_RESOURCE_EXHAUSTED,
                           "out of memory for the reflection descriptors");
        return;
    }
    grpc_slice all;
    uint8_t *answer = NULL;
    size_t len = 0;
    if (pgw_grpc_read_all(c->recv_message, &all) == 0) {
        answer = pgw_reflection_answer(reflection, GRPC_SLICE_START_PTR(all),
                                       GRPC_SLICE_LENGTH(all), &len);
        grpc_slice_unref(all);
    }
    if (!answer) {
        pgw_grpc_call_send(c, NULL, 1, GRPC_STATUS_INVALID_ARGUMENT,
                           "the message is not a ServerReflectionRequest");
        return;
    }
    pgw_grpc_call_send(c, pgw_grpc_byte_buffer(answer, len), 0, GRPC_STATUS_OK, NULL);
    free(answer);
}

static void on_send_done(pgw_grpc_call *c, int ok)
{
    /* After an answer (not the final status, whose completion leaves nothing to receive):
     * the next question. A recv that cannot start means the call is over. */
    if (ok && c->send_message)
        pgw_grpc_call_recv(c);
}

#define REFLECTION_METHOD(var, pkg)                                                                \
    const pgw_grpc_method var = {                                                                  \
        .name = pkg ".ServerReflection/ServerReflectionInfo",                                      \
        .path = "/" pkg ".ServerReflection/ServerReflectionInfo",                                  \
        .reads_payload = 0,                                                                        \
        .posted_per_thread = 2,                                                                    \
        .server_init = server_init,                                                                \
        .server_free = server_free,                                                                \
        .on_new = on_new,                                                                          \
        .on_send_done = on_send_done,                                                              \
        .on_recv_done = on_recv_done,                                                              \
    }

REFLECTION_METHOD(pgw_grpc_reflection_v1alpha_method, "grpc.reflection.v1alpha");
REFLECTION_METHOD(pgw_grpc_reflection_v1_method, "grpc.reflection.v1");

/* The benchmark's floor: a trivial gRPC core server that answers every
 * DescribeBatchInferenceJob with one fixed, pre-packed response, with the same threading as
 * the gateway (N completion-queue threads, requests kept posted). Whatever this does per
 * second on a machine is the most any gRPC core server can do there; the gateway's L1 hits are
 * measured against it.
 *
 * Usage: pgw-bench-fixed-server [host:port] [threads]   (runs until SIGINT/SIGTERM) */
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METHOD "/personalize_gateway.v1.PersonalizeGateway/DescribeBatchInferenceJob"
#define POSTED 64

typedef struct call_state {
    int sending; /* 0: waiting for a call, 1: the answer is being sent */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    int cancelled;
} call_state;

static grpc_server *server;
static grpc_completion_queue *cq;
static void *method;
static grpc_slice answer;

static void post(call_state *c)
{
    memset(c, 0, sizeof(*c));
    grpc_metadata_array_init(&c->md);
    grpc_server_request_registered_call(server, method, &c->call, &c->deadline, &c->md, &c->payload,
                                        cq, cq, c);
}

static void *serve(void *arg)
{
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            return NULL;
        call_state *c = ev.tag;
        if (!c)
            continue; /* the shutdown tag */
        if (c->sending || !ev.success) {
            if (c->call)
                grpc_call_unref(c->call);
            if (c->payload)
                grpc_byte_buffer_destroy(c->payload);
            grpc_metadata_array_destroy(&c->md);
            if (ev.success || c->sending)
                post(c);
            continue;
        }
        grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&answer, 1);
        grpc_op ops[4];
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[1].op = GRPC_OP_SEND_MESSAGE;
        ops[1].data.send_message.send_message = bb;
        ops[2].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[2].data.send_status_from_server.status = GRPC_STATUS_OK;
        ops[3].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[3].data.recv_close_on_server.cancelled = &c->cancelled;
        c->sending = 1;
        grpc_call_start_batch(c->call, ops, 4, c, NULL);
        grpc_byte_buffer_destroy(bb); /* the batch holds its own reference to the slices */
    }
}

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : "127.0.0.1:50099";
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    /* A realistic answer: about the size of a full job. */
    static uint8_t body[600];
    memset(body, 'x', sizeof(body));
    body[0] = 0x0a;
    body[1] = 0xd6; /* varint 598 */
    body[2] = 0x04;
    answer = grpc_slice_from_static_buffer(body, sizeof(body));

    grpc_init();
    server = grpc_server_create(NULL, NULL);
    cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(server, cq, NULL);
    method = grpc_server_register_method(server, METHOD, NULL,
                                         GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(server, addr, creds);
    grpc_server_credentials_release(creds);
    if (port <= 0) {
        fprintf(stderr, "cannot listen on %s\n", addr);
        return 1;
    }
    grpc_server_start(server);
    call_state *states = calloc((size_t)threads * POSTED, sizeof(call_state));
    for (int i = 0; i < threads * POSTED; i++)
        post(&states[i]);
    pthread_t *t = calloc((size_t)threads, sizeof(pthread_t));
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, serve, NULL);
    printf("fixed server listening on port %d\n", port);
    fflush(stdout);
    int sig;
    sigwait(&sigs, &sig);
    grpc_server_shutdown_and_notify(server, cq, NULL);
    grpc_server_cancel_all_calls(server);
    grpc_server_destroy(server);
    grpc_completion_queue_shutdown(cq);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    grpc_completion_queue_destroy(cq);
    grpc_shutdown();
    free(states);
    free(t);
    return 0;
}

/* Holds many WatchBatchInferenceJob streams open on the gRPC core C API and reports when each
 * message reached the last of them: the client side of bench/watch_bench.py (10,000 idle
 * watchers, fan-out latency). A C client, because a Python one with 10,000 streams would measure
 * itself.
 *
 *   pgw-bench-watch-clients TARGET ARN STREAMS CHANNELS
 *
 * Prints, one line each, flushed:
 *   ready <streams> <ns>              every stream has its first message (CLOCK_REALTIME ns)
 *   msg <k> <first_ns> <last_ns> <n>  message k (2, 3, ...) has reached all n open streams
 *   end <ok> <other>                  every stream ended (OK / any other status)
 * and exits when every stream has ended. */
#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define METHOD   "/personalize_gateway.v1.PersonalizeGateway/WatchBatchInferenceJob"
#define MAX_MSGS 16

typedef enum tag_kind { TAG_START, TAG_RECV, TAG_STATUS } tag_kind;

typedef struct stream stream;
typedef struct tag {
    tag_kind kind;
    stream *s;
} tag;

struct stream {
    grpc_call *call;
    tag start_tag, recv_tag, status_tag;
    grpc_metadata_array initial_md, trailing_md;
    grpc_byte_buffer *recv;
    grpc_status_code status;
    grpc_slice details;
    int messages;
    int ended;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void start_recv(stream *s)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &s->recv;
    if (grpc_call_start_batch(s->call, &op, 1, &s->recv_tag, NULL) != GRPC_CALL_OK) {
        fprintf(stderr, "recv batch refused\n");
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s TARGET ARN STREAMS CHANNELS\n", argv[0]);
        return 2;
    }
    const char *target = argv[1], *arn = argv[2];
    int n = atoi(argv[3]), n_channels = atoi(argv[4]);
    size_t arn_len = strlen(arn);
    if (n <= 0 || n_channels <= 0 || arn_len > 127)
        return 2;
    grpc_init();
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel **channels = calloc((size_t)n_channels, sizeof(*channels));
    for (int i = 0; i < n_channels; i++) {
        /* A distinct argument per channel keeps them on separate connections. */
        grpc_arg arg = {.type = GRPC_ARG_INTEGER, .key = "pgw.bench.channel", .value.integer = i};
        grpc_channel_args args = {1, &arg};
        channels[i] = grpc_channel_create(target, creds, &args);
    }
    /* WatchBatchInferenceJobRequest: field 1, length-delimited. */
    uint8_t req[130];
    req[0] = 0x0a;
    req[1] = (uint8_t)arn_len;
    memcpy(req + 2, arn, arn_len);
    grpc_slice req_slice = grpc_slice_from_copied_buffer((const char *)req, arn_len + 2);
    grpc_slice method = grpc_slice_from_static_string(METHOD);

    stream *streams = calloc((size_t)n, sizeof(*streams));
    int64_t *first = calloc(MAX_MSGS, sizeof(int64_t)), *last = calloc(MAX_MSGS, sizeof(int64_t));
    int *have = calloc(MAX_MSGS, sizeof(int));
    for (int i = 0; i < n; i++) {
        stream *s = &streams[i];
        s->start_tag = (tag){TAG_START, s};
        s->recv_tag = (tag){TAG_RECV, s};
        s->status_tag = (tag){TAG_STATUS, s};
        grpc_metadata_array_init(&s->initial_md);
        grpc_metadata_array_init(&s->trailing_md);
        s->call =
            grpc_channel_create_call(channels[i % n_channels], NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                     method, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&req_slice, 1);
        grpc_op ops[4];
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[1].op = GRPC_OP_SEND_MESSAGE;
        ops[1].data.send_message.send_message = bb;
        ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
        if (grpc_call_start_batch(s->call, ops, 4, &s->start_tag, NULL) != GRPC_CALL_OK)
            return 1;
        grpc_byte_buffer_destroy(bb); /* the call holds its own reference */
        grpc_op st;
        memset(&st, 0, sizeof(st));
        st.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        st.data.recv_status_on_client.trailing_metadata = &s->trailing_md;
        st.data.recv_status_on_client.status = &s->status;
        st.data.recv_status_on_client.status_details = &s->details;
        if (grpc_call_start_batch(s->call, &st, 1, &s->status_tag, NULL) != GRPC_CALL_OK)
            return 1;
        start_recv(s);
    }
    int ended = 0, ok = 0, open = n, ready_printed = 0;
    while (ended < n) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        tag *t = ev.tag;
        stream *s = t->s;
        if (t->kind == TAG_RECV) {
            if (s->recv) {
                int k = s->messages++;
                grpc_byte_buffer_destroy(s->recv);
                s->recv = NULL;
                if (k < MAX_MSGS) {
                    int64_t at = now_ns();
                    if (!have[k]++)
                        first[k] = at;
                    last[k] = at;
                    if (k == 0 && have[0] == n && !ready_printed) {
                        printf("ready %d %lld\n", n, (long long)at);
                        fflush(stdout);
                        ready_printed = 1;
                    } else if (k > 0 && have[k] == open) {
                        printf("msg %d %lld %lld %d\n", k + 1, (long long)first[k],
                               (long long)last[k], have[k]);
                        fflush(stdout);
                    }
                }
                start_recv(s);
            }
        } else if (t->kind == TAG_STATUS) {
            s->ended = 1;
            ended++;
            ok += s->status == GRPC_STATUS_OK;
            if (s->messages < 2)
                open--;
        }
    }
    printf("end %d %d\n", ok, n - ok);
    fflush(stdout);
    for (int i = 0; i < n; i++) {
        grpc_call_unref(streams[i].call);
        grpc_metadata_array_destroy(&streams[i].initial_md);
        grpc_metadata_array_destroy(&streams[i].trailing_md);
        grpc_slice_unref(streams[i].details);
    }
    for (int i = 0; i < n_channels; i++)
        grpc_channel_destroy(channels[i]);
    grpc_channel_credentials_release(creds);
    grpc_slice_unref(req_slice);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    grpc_shutdown();
    free(streams);
    free(first);
    free(last);
    free(have);
    free(channels);
    return 0;
}

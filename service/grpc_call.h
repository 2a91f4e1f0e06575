/* grpc_call: the small core every gRPC method of the gateway is built on, and the method table
 * that plugs a method into the server (grpc_server.c).
 *
 * A method is a pgw_grpc_method: its path, whether its request comes with the call, and the
 * callbacks of its state machine. The server keeps requests for it posted, and hands each
 * completion-queue event of one of its calls to those callbacks (on a completion-queue thread).
 * Adding an rpc is one file with its table (grpc_rpc_*.c) and one line in grpc_server.c.
 *
 * A call (pgw_grpc_call) is reference-counted: one reference per batch it has started (taken
 * and dropped by the core), one given to on_new (the method's, which it drops when done with
 * the call), and any the method takes while it hands the call to another thread. The last
 * release frees it, after on_free. Every function here is safe from any thread:
 * grpc_call_start_batch is thread-safe; what a method keeps in `state` is its own business. */
#ifndef PGW_GRPC_CALL_H
#define PGW_GRPC_CALL_H

#include <grpc/grpc.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "service/identity.h"
#include "service/status.h"

typedef struct pgw_grpc_server pgw_grpc_server;
typedef struct pgw_grpc_call pgw_grpc_call;
typedef struct pgw_grpc_method pgw_grpc_method;

typedef enum pgw_grpc_tag_kind {
    PGW_GRPC_TAG_NEW,   /* the posted request was matched with a call (or failed: shutdown) */
    PGW_GRPC_TAG_CLOSE, /* RECV_CLOSE_ON_SERVER completed: the call is over */
    PGW_GRPC_TAG_SEND,  /* a batch started with pgw_grpc_call_send* completed */
    PGW_GRPC_TAG_RECV,  /* a RECV_MESSAGE started with pgw_grpc_call_recv completed */
} pgw_grpc_tag_kind;

typedef struct pgw_grpc_tag {
    pgw_grpc_tag_kind kind;
    pgw_grpc_call *call;
} pgw_grpc_tag;

struct pgw_grpc_method {
    const char *name; /* for logs */
    /* "/package.Service/Method"; NULL for the catch-all that gets every unregistered method */
    const char *path;
    int reads_payload; /* the request message arrives with the call (unary, server stream) */
    /* Requests kept posted per completion-queue thread. A call that finds none posted is not
     * refused: gRPC core queues it and hands it over when the next request is posted, which
     * every new call does for its method at once. So this bounds only how many calls are matched
     * without that hop; each costs ~0.9 kB of idle memory (bench/README.md, "Idle memory"). */
    int posted_per_thread;
    /* Per-server state of the method (NULL: none): created when the server is, freed with it.
     * Returns 0, or -1 with a reason in err. */
    int (*server_init)(pgw_grpc_server *server, void **state, char *err, size_t err_len);
    void (*server_free)(void *state);
    /* Every few hundred ms on a completion-queue thread, and once when shutdown begins
     * (shutting_down set by then): for streams that poll something. May be NULL. */
    void (*tick)(pgw_grpc_server *server, void *state);
    /* A new call. The callee owns the call's first reference. */
    void (*on_new)(pgw_grpc_call *call);
    /* The batch of pgw_grpc_call_send* completed; ok = 0 when the call was already over. */
    void (*on_send_done)(pgw_grpc_call *call, int ok);
    /* The RECV_MESSAGE of pgw_grpc_call_recv completed; call->recv_message is NULL when the
     * client half-closed (or the call failed). */
    void (*on_recv_done)(pgw_grpc_call *call, int ok);
    /* RECV_CLOSE_ON_SERVER of pgw_grpc_call_watch_close completed; call->cancelled says the
     * client went away (cancelled, deadline, connection lost) rather than our status ending it. */
    void (*on_close)(pgw_grpc_call *call);
    /* Releases call->state; runs once, just before the call is freed. May be NULL. */
    void (*on_free)(pgw_grpc_call *call);
};

struct pgw_grpc_call {
    pgw_grpc_server *server;
    const pgw_grpc_method *method;
    void *method_state; /* the method's per-server state */
    atomic_int refs;
    pgw_grpc_tag new_tag, close_tag, send_tag, recv_tag;

    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array request_md;
    grpc_byte_buffer *payload; /* reads_payload methods: NULL = the client sent no message */
    grpc_call_details details; /* the catch-all only */
    int cancelled;             /* filled by RECV_CLOSE_ON_SERVER */
    int close_watched;         /* RECV_CLOSE_ON_SERVER runs in its own batch */
    int64_t started_us;

    /* the caller, from its verified certificate or the trusted header (pgw_grpc_call_identity) */
    char identity[PGW_IDENTITY_MAX_LEN + 1];
    int has_identity;

    /* What the batch in flight references; released when it completes. */
    int initial_md_sent;
    grpc_byte_buffer *send_message;
    grpc_metadata out_md[2];
    size_t n_out_md;
    grpc_slice status_details;
    int has_status_details;
    grpc_byte_buffer *recv_message; /* pgw_grpc_call_recv's result, owned by the call */

    void *state; /* the method's own, freed by on_free */
};

/* Takes / drops a reference. The last drop runs on_free and frees the call. */
void pgw_grpc_call_ref(pgw_grpc_call *call);
void pgw_grpc_call_unref(pgw_grpc_call *call);

/* Starts RECV_CLOSE_ON_SERVER in a batch of its own, so a cancellation or passed deadline is
 * seen (on_close) while the method works. Returns 0, or -1 (no callback will come). */
int pgw_grpc_call_watch_close(pgw_grpc_call *call);

/* Response metadata for the first send; key static, value copied. At most two. */
void pgw_grpc_call_add_metadata(pgw_grpc_call *call, const char *key, const char *value);

/* Answers a unary call in one batch: initial metadata, `message` (consumed; NULL for none:
 * always none unless code is OK) and the status; RECV_CLOSE_ON_SERVER rides along unless
 * pgw_grpc_call_watch_close started it. on_send_done follows. */
void pgw_grpc_call_answer(pgw_grpc_call *call, grpc_status_code code, const char *details,
                          grpc_byte_buffer *message);

/* One step of a stream: a message (consumed; NULL for none) and, with end_stream, the status
 * after it; initial metadata goes with the first send. The caller keeps at most one send in
 * flight (gRPC's rule: this is its flow control); on_send_done says when it is over. Returns 0,
 * or -1 when the batch could not start (the call is over: no callback). */
int pgw_grpc_call_send(pgw_grpc_call *call, grpc_byte_buffer *message, int end_stream,
                       grpc_status_code code, const char *details);

/* Starts receiving the next message of a client stream (on_recv_done follows). Returns 0 or
 * -1 (no callback). */
int pgw_grpc_call_recv(pgw_grpc_call *call);

/* A byte buffer holding a copy of bytes. */
grpc_byte_buffer *pgw_grpc_byte_buffer(const uint8_t *bytes, size_t len);

/* A byte buffer holding a message whose field 1 is the packed bytes (length-delimited): how a
 * response wraps a BatchInferenceJob, without unpacking and re-packing the cached job. */
grpc_byte_buffer *pgw_grpc_wrap_field1(const uint8_t *bytes, size_t len);

/* The whole (possibly compressed, multi-slice) payload as one slice; the caller unrefs it.
 * Returns 0, or -1 when it cannot be read. */
int pgw_grpc_read_all(grpc_byte_buffer *bb, grpc_slice *out);

/* Fills call->identity / has_identity: the verified client certificate under mutual TLS, else
 * the trusted header if one is configured. */
void pgw_grpc_call_take_identity(pgw_grpc_call *call);

/* pgw_grpc_call_take_identity, then the --require-identity check: NULL when the call may go
 * on, else the message to end it with UNAUTHENTICATED (the refusal is counted and audited;
 * the request is not even decoded: a caller without an identity learns nothing). */
const char *pgw_grpc_call_require_identity(pgw_grpc_call *call);

/* The call's deadline in CLOCK_MONOTONIC ms (pgw_now_mono_ms), 0 for none. */
int64_t pgw_grpc_call_deadline_ms(const pgw_grpc_call *call);

/* Request metadata `cache-control` holds no-cache. */
int pgw_grpc_call_wants_no_cache(const pgw_grpc_call *call);

/* The arn field (field 1) of a Describe or Watch request: both messages have the same shape.
 * Copies at most cap - 1 bytes, every byte as sent (an embedded NUL included: see
 * request_decode.h), and NUL-terminates (a longer value keeps a prefix, which the ARN check
 * rejects by its length); *len is the copied length. Returns 0, or -1 when the payload is no
 * such message. */
int pgw_grpc_read_arn_request(grpc_byte_buffer *payload, char *arn, size_t cap, size_t *len);

/* --- the server, as its methods see it (grpc_server.c) --- */

struct pgw_grpc_server_options;

/* The options the server was created with (lookup, loop, identity settings, ...). */
const struct pgw_grpc_server_options *pgw_grpc_server_opts(const pgw_grpc_server *server);

/* Nonzero once pgw_grpc_server_shutdown has begun. */
int pgw_grpc_server_shutting_down(const pgw_grpc_server *server);

/* For pgw_grpc_call_unref: a call struct is gone (had_call: it held a gRPC call). */
void pgw_grpc_server_call_freed(pgw_grpc_server *server, int had_call);

#endif

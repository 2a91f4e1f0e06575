/* The gRPC call core; see grpc_call.h. */
#include "service/grpc_call.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/support/time.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "service/audit.h"
#include "service/clock.h"
#include "service/grpc_server.h"
#include "service/metrics.h"
#include "service/request_decode.h"

void pgw_grpc_call_ref(pgw_grpc_call *c)
{
    atomic_fetch_add(&c->refs, 1);
}

void pgw_grpc_call_unref(pgw_grpc_call *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    if (c->method->on_free)
        c->method->on_free(c);
    int had_call = c->call != NULL;
    if (c->call)
        grpc_call_unref(c->call);
    grpc_metadata_array_destroy(&c->request_md);
    grpc_call_details_destroy(&c->details);
    if (c->payload)
        grpc_byte_buffer_destroy(c->payload);
    if (c->send_message)
        grpc_byte_buffer_destroy(c->send_message);
    if (c->recv_message)
        grpc_byte_buffer_destroy(c->recv_message);
    for (size_t i = 0; i < c->n_out_md; i++) {
        grpc_slice_unref(c->out_md[i].key);
        grpc_slice_unref(c->out_md[i].value);
    }
    if (c->has_status_details)
        grpc_slice_unref(c->status_details);
    pgw_grpc_server *s = c->server;
    free(c);
    pgw_grpc_server_call_freed(s, had_call);
}

int pgw_grpc_call_watch_close(pgw_grpc_call *c)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    c->close_watched = 1;
    pgw_grpc_call_ref(c);
    if (grpc_call_start_batch(c->call, &op, 1, &c->close_tag, NULL) != GRPC_CALL_OK) {
        c->close_watched = 0;
        pgw_grpc_call_unref(c);
        return -1;
    }
    return 0;
}

void pgw_grpc_call_add_metadata(pgw_grpc_call *c, const char *key, const char *value)
{
    if (c->n_out_md >= sizeof(c->out_md) / sizeof(c->out_md[0]))
        return;
    c->out_md[c->n_out_md].key = grpc_slice_from_static_string(key);
    c->out_md[c->n_out_md].value = grpc_slice_from_copied_string(value);
    c->n_out_md++;
}

/* Drops what the previous batch referenced (it has completed: the caller keeps one in flight). */
static void release_sent(pgw_grpc_call *c)
{
    if (c->send_message) {
        grpc_byte_buffer_destroy(c->send_message);
        c->send_message = NULL;
    }
    if (c->has_status_details) {
        grpc_slice_unref(c->status_details);
        c->has_status_details = 0;
    }
}

/* Builds and starts one batch. close_too: RECV_CLOSE_ON_SERVER rides along. */
static int start_send(pgw_grpc_call *c, grpc_byte_buffer *message, int end_stream,
                      grpc_status_code code, const char *details, int close_too)
{
    release_sent(c);
    grpc_op ops[4];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (!c->initial_md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[n].data.send_initial_metadata.count = c->n_out_md;
        ops[n].data.send_initial_metadata.metadata = c->n_out_md ? c->out_md : NULL;
        n++;
        c->initial_md_sent = 1;
    }
    if (message) {
        c->send_message = message;
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = message;
        n++;
    }
    if (end_stream) {
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = code;
        if (details && code != GRPC_STATUS_OK) {
            c->status_details = grpc_slice_from_copied_string(details);
            c->has_status_details = 1;
            ops[n].data.send_status_from_server.status_details = &c->status_details;
        }
        n++;
    }
    if (close_too) {
        ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[n].data.recv_close_on_server.cancelled = &c->cancelled;
        n++;
    }
    pgw_grpc_call_ref(c);
    if (grpc_call_start_batch(c->call, ops, n, &c->send_tag, NULL) != GRPC_CALL_OK) {
        pgw_grpc_call_unref(c); /* no tag will come */
        return -1;
    }
    return 0;
}

void pgw_grpc_call_answer(pgw_grpc_call *c, grpc_status_code code, const char *details,
                          grpc_byte_buffer *message)
{
    if (message && code != GRPC_STATUS_OK) {
        grpc_byte_buffer_destroy(message);
        message = NULL;
    }
    start_send(c, message, 1, code, details, !c->close_watched);
}

int pgw_grpc_call_send(pgw_grpc_call *c, grpc_byte_buffer *message, int end_stream,
                       grpc_status_code code, const char *details)
{
    return start_send(c, message, end_stream, code, details, 0);
}

int pgw_grpc_call_recv(pgw_grpc_call *c)
{
    if (c->recv_message) {
        grpc_byte_buffer_destroy(c->recv_message);
        c->recv_message = NULL;
    }
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_message;
    pgw_grpc_call_ref(c);
    if (grpc_call_start_batch(c->call, &op, 1, &c->recv_tag, NULL) != GRPC_CALL_OK) {
        pgw_grpc_call_unref(c);
        return -1;
    }
    return 0;
}

grpc_byte_buffer *pgw_grpc_byte_buffer(const uint8_t *bytes, size_t len)
{
    grpc_slice slice = grpc_slice_malloc(len);
    if (len)
        memcpy(GRPC_SLICE_START_PTR(slice), bytes, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}

grpc_byte_buffer *pgw_grpc_wrap_field1(const uint8_t *bytes, size_t len)
{
    uint8_t prefix[11];
    size_t np = 0;
    prefix[np++] = 0x0a; /* field 1, wire type 2 */
    size_t v = len;
    do {
        prefix[np++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    grpc_slice slice = grpc_slice_malloc(np + len);
    memcpy(GRPC_SLICE_START_PTR(slice), prefix, np);
    if (len)
        memcpy(GRPC_SLICE_START_PTR(slice) + np, bytes, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}

int pgw_grpc_read_all(grpc_byte_buffer *bb, grpc_slice *out)
{
    grpc_byte_buffer_reader reader;
    if (!bb || !grpc_byte_buffer_reader_init(&reader, bb))
        return -1;
    *out = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    return 0;
}

void pgw_grpc_call_take_identity(pgw_grpc_call *c)
{
    const pgw_grpc_server_options *o = pgw_grpc_server_opts(c->server);
    int rc = -1;
    if (o->tls_client_ca_file)
        rc = pgw_identity_from_call(c->call, c->identity, sizeof(c->identity));
    else if (o->identity_header)
        rc = pgw_identity_from_metadata(&c->request_md, o->identity_header, c->identity,
                                        sizeof(c->identity));
    c->has_identity = rc == 0;
}

const char *pgw_grpc_call_require_identity(pgw_grpc_call *c)
{
    pgw_grpc_call_take_identity(c);
    const pgw_grpc_server_options *o = pgw_grpc_server_opts(c->server);
    if (c->has_identity || !o->require_identity)
        return NULL;
    pgw_metrics_auth_decision("unauthenticated");
    if (o->audit) {
        pgw_audit_record rec = {
            .frontend = "grpc",
            .decision = PGW_AUDIT_UNAUTHENTICATED,
            .code = PGW_UNAUTHENTICATED,
            .latency_us = pgw_now_mono_us() - c->started_us,
        };
        pgw_audit_log(o->audit, &rec);
    }
    return o->tls_client_ca_file
               ? "this gateway requires a client certificate signed by its client CA"
               : "this gateway requires a caller identity";
}

int64_t pgw_grpc_call_deadline_ms(const pgw_grpc_call *c)
{
    gpr_timespec d = gpr_convert_clock_type(c->deadline, GPR_CLOCK_MONOTONIC);
    if (gpr_time_cmp(d, gpr_inf_future(GPR_CLOCK_MONOTONIC)) == 0)
        return 0;
    gpr_timespec left = gpr_time_sub(d, gpr_now(GPR_CLOCK_MONOTONIC));
    int64_t ms = (int64_t)left.tv_sec * 1000 + left.tv_nsec / 1000000;
    return pgw_now_mono_ms() + (ms > 0 ? ms : 0);
}

int pgw_grpc_call_wants_no_cache(const pgw_grpc_call *c)
{
    const grpc_metadata_array *md = &c->request_md;
    for (size_t i = 0; i < md->count; i++) {
        if (grpc_slice_str_cmp(md->metadata[i].key, "cache-control") != 0)
            continue;
        const grpc_slice v = md->metadata[i].value;
        size_t len = GRPC_SLICE_LENGTH(v);
        const char *p = (const char *)GRPC_SLICE_START_PTR(v);
        for (size_t j = 0; j + 8 <= len; j++)
            if (strncasecmp(p + j, "no-cache", 8) == 0)
                return 1;
    }
    return 0;
}

int pgw_grpc_read_arn_request(grpc_byte_buffer *payload, char *arn, size_t cap, size_t *len)
{
    /* Describe's and Watch's requests are the same message ({ string batch_inference_job_arn
     * = 1; }), so one decoder serves both: request_decode.h reads field 1 as bytes, so an
     * embedded NUL reaches the ARN check instead of cutting the ARN short. */
    grpc_slice all;
    if (pgw_grpc_read_all(payload, &all) != 0)
        return -1;
    int rc = pgw_request_decode_arn(GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all), arn, cap,
                                    len, NULL, 0);
    grpc_slice_unref(all);
    return rc;
}

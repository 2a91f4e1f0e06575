/* grpc.health.v1.Health: Check (unary) and Watch (server streaming), for Kubernetes' native
 * gRPC probes. Both answer from pgw_health (any thread), so they never touch the loop.
 *
 * Watch streams are kept in a list (the method's server state, under its mutex); the server's
 * tick looks for a change of readiness every few hundred ms and sends each stream the new
 * status, one send in flight per stream; once shutdown begins, the final OK status. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "service/grpc_rpc.h"
#include "service/health.h"

/* The health request's service name is "" (the whole server) or our service: else unknown. */
static int health_service_known(grpc_byte_buffer *payload)
{
    if (!payload)
        return 1;
    grpc_slice all;
    if (pgw_grpc_read_all(payload, &all) != 0)
        return 0;
    Grpc__Health__V1__HealthCheckRequest *req = grpc__health__v1__health_check_request__unpack(
        NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    if (!req)
        return 0;
    int known = req->service[0] == '\0' || strcmp(req->service, PGW_GRPC_SERVICE) == 0;
    grpc__health__v1__health_check_request__free_unpacked(req, NULL);
    return known;
}

static int current_serving_status(void)
{
    return pgw_health_ready(NULL)
               ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
               : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

static grpc_byte_buffer *health_message(int status)
{
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
    uint8_t buf[16];
    size_t len = grpc__health__v1__health_check_response__pack(&resp, buf);
    return pgw_grpc_byte_buffer(buf, len);
}

/* --- Check --- */

static void on_new_check(pgw_grpc_call *c)
{
    if (health_service_known(c->payload))
        pgw_grpc_call_answer(c, GRPC_STATUS_OK, NULL, health_message(current_serving_status()));
    else
        pgw_grpc_call_answer(c, GRPC_STATUS_NOT_FOUND, "unknown service", NULL);
    pgw_grpc_call_unref(c);
}

const pgw_grpc_method pgw_grpc_health_check_method = {
    .name = "Health/Check",
    .path = "/grpc.health.v1.Health/Check",
    .reads_payload = 1,
    .posted_per_thread = 4,
    .on_new = on_new_check,
};

/* --- Watch --- */

typedef struct watch_list {
    pthread_mutex_t mu;
    pgw_grpc_call *streams; /* linked through their state's `next`; each holds a reference */
} watch_list;

typedef struct health_stream {
    pgw_grpc_call *next;
    int service_known;
    int last_status; /* -1 before the first update */
    int sending;
    int finished; /* the final status went out */
} health_stream;

static int watch_server_init(pgw_grpc_server *server, void **state, char *err, size_t err_len)
{
    watch_list *l = calloc(1, sizeof(*l));
    if (!l)
        return -1;
    pthread_mutex_init(&l->mu, NULL);
    *state = l;
    return 0;
}

static void watch_server_free(void *state)
{
    watch_list *l = state;
    if (!l)
        return;
    pthread_mutex_destroy(&l->mu);
    free(l);
}

/* Sends each stream its next update: the current status when it changed, or after shutdown
 * began, the final OK status. Any thread; takes the list's mutex. */
static void poll_streams(pgw_grpc_server *server, void *state)
{
    watch_list *l = state;
    int status = current_serving_status();
    int finishing = pgw_grpc_server_shutting_down(server);
    pthread_mutex_lock(&l->mu);
    for (pgw_grpc_call *c = l->streams; c; c = ((health_stream *)c->state)->next) {
        health_stream *h = c->state;
        if (h->sending || h->finished)
            continue;
        int want = h->service_known
                       ? status
                       : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
        int rc;
        if (want != h->last_status) {
            h->last_status = want;
            rc = pgw_grpc_call_send(c, health_message(want), 0, GRPC_STATUS_OK, NULL);
        } else if (finishing) {
            h->finished = 1;
            rc = pgw_grpc_call_send(c, NULL, 1, GRPC_STATUS_OK, NULL);
        } else {
            continue;
        }
        if (rc == 0)
            h->sending = 1;
        else
            h->finished = 1;
    }
    pthread_mutex_unlock(&l->mu);
}

static void on_new_watch(pgw_grpc_call *c)
{
    watch_list *l = c->method_state;
    health_stream *h = calloc(1, sizeof(*h));
    if (!h) {
        pgw_grpc_call_answer(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
        pgw_grpc_call_unref(c);
        return;
    }
    h->last_status = -1;
    h->service_known = health_service_known(c->payload);
    c->state = h;
    if (pgw_grpc_call_watch_close(c) != 0) {
        pgw_grpc_call_unref(c);
        return;
    }
    /* The new-call reference now belongs to the list, until the stream closes. */
    pthread_mutex_lock(&l->mu);
    h->next = l->streams;
    l->streams = c;
    pthread_mutex_unlock(&l->mu);
    poll_streams(c->server, l);
}

static void on_watch_sent(pgw_grpc_call *c, int ok)
{
    watch_list *l = c->method_state;
    pthread_mutex_lock(&l->mu);
    ((health_stream *)c->state)->sending = 0;
    pthread_mutex_unlock(&l->mu);
    poll_streams(c->server, l);
}

/* The stream ended (client went away, or after our final status): leave the list. */
static void on_watch_close(pgw_grpc_call *c)
{
    watch_list *l = c->method_state;
    pthread_mutex_lock(&l->mu);
    for (pgw_grpc_call **p = &l->streams; *p; p = &((health_stream *)(*p)->state)->next) {
        if (*p == c) {
            *p = ((health_stream *)c->state)->next;
            pthread_mutex_unlock(&l->mu);
            pgw_grpc_call_unref(c); /* the list's reference */
            return;
        }
    }
    pthread_mutex_unlock(&l->mu);
}

static void on_free(pgw_grpc_call *c)
{
    free(c->state);
}

const pgw_grpc_method pgw_grpc_health_watch_method = {
    .name = "Health/Watch",
    .path = "/grpc.health.v1.Health/Watch",
    .reads_payload = 1,
    .posted_per_thread = 4,
    .server_init = watch_server_init,
    .server_free = watch_server_free,
    .tick = poll_streams,
    .on_new = on_new_watch,
    .on_send_done = on_watch_sent,
    .on_close = on_watch_close,
    .on_free = on_free,
};

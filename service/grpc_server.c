/* The gRPC server: listener, completion-queue threads, and the table of methods (see
 * grpc_server.h for the map of files). Each completion-queue event goes to the callbacks of
 * the method whose call it belongs to (grpc_call.h). */
#include "service/grpc_server.h"

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/clock.h"
#include "service/grpc_call.h"
#include "service/grpc_rpc.h"
#include "service/log.h"
#include "service/tls_reload.h"

/* How often the methods' tick runs (Health/Watch streams look for a change of readiness). */
#define TICK_MS 200

/* The methods served. The catch-all (path NULL) must stay: without a request posted for
 * unregistered methods the core leaves such a call waiting until its deadline. */
static const pgw_grpc_method *const METHODS[] = {
    &pgw_grpc_describe_method,           &pgw_grpc_watch_job_method,
    &pgw_grpc_health_check_method,       &pgw_grpc_health_watch_method,
    &pgw_grpc_reflection_v1alpha_method, &pgw_grpc_reflection_v1_method,
    &pgw_grpc_unimplemented_method,
};
#define N_METHODS (sizeof(METHODS) / sizeof(METHODS[0]))

struct pgw_grpc_server {
    pgw_grpc_server_options options;
    grpc_server *server;
    grpc_completion_queue *cq;
    void *registered[N_METHODS]; /* grpc_server_register_method handles */
    void *state[N_METHODS];      /* each method's server_init state */
    int initialized[N_METHODS];
    int port;
    pthread_t *threads;
    int n_threads;
    atomic_int in_flight;
    /* call structs alive, posted requests included: the server may only be freed once the
     * last one is (the loop may hold one a moment after gRPC considers its call done). */
    atomic_int live_calls;
    atomic_int shutting_down;
    pgw_grpc_tag shutdown_tag;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int shutdown_done;
};

const pgw_grpc_server_options *pgw_grpc_server_opts(const pgw_grpc_server *s)
{
    return &s->options;
}

int pgw_grpc_server_shutting_down(const pgw_grpc_server *s)
{
    return atomic_load(&s->shutting_down);
}

void pgw_grpc_server_call_freed(pgw_grpc_server *s, int had_call)
{
    if (had_call)
        atomic_fetch_sub(&s->in_flight, 1);
    if (atomic_fetch_sub(&s->live_calls, 1) == 1) {
        pthread_mutex_lock(&s->mu);
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->mu);
    }
}

/* Posts one request for a new call of method i. */
static void post_request(pgw_grpc_server *s, size_t i)
{
    if (atomic_load(&s->shutting_down))
        return;
    pgw_grpc_call *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->server = s;
    c->method = METHODS[i];
    c->method_state = s->state[i];
    atomic_init(&c->refs, 1); /* the "new call" tag's */
    c->new_tag = (pgw_grpc_tag){PGW_GRPC_TAG_NEW, c};
    c->close_tag = (pgw_grpc_tag){PGW_GRPC_TAG_CLOSE, c};
    c->send_tag = (pgw_grpc_tag){PGW_GRPC_TAG_SEND, c};
    c->recv_tag = (pgw_grpc_tag){PGW_GRPC_TAG_RECV, c};
    grpc_metadata_array_init(&c->request_md);
    grpc_call_details_init(&c->details);
    atomic_fetch_add(&s->live_calls, 1);
    grpc_call_error e;
    if (METHODS[i]->path)
        e = grpc_server_request_registered_call(
            s->server, s->registered[i], &c->call, &c->deadline, &c->request_md,
            METHODS[i]->reads_payload ? &c->payload : NULL, s->cq, s->cq, &c->new_tag);
    else
        e = grpc_server_request_call(s->server, &c->call, &c->details, &c->request_md, s->cq, s->cq,
                                     &c->new_tag);
    if (e != GRPC_CALL_OK) {
        c->call = NULL;
        pgw_grpc_call_unref(c);
    }
}

static size_t method_index(const pgw_grpc_method *m)
{
    for (size_t i = 0; i < N_METHODS; i++)
        if (METHODS[i] == m)
            return i;
    return N_METHODS - 1;
}

static void tick_methods(pgw_grpc_server *s)
{
    for (size_t i = 0; i < N_METHODS; i++)
        if (METHODS[i]->tick && s->initialized[i])
            METHODS[i]->tick(s, s->state[i]);
}

static void on_new_call(pgw_grpc_server *s, pgw_grpc_call *c, int success)
{
    if (!success) { /* the server is shutting down: the request is failed back */
        if (c->call) {
            grpc_call_unref(c->call);
            c->call = NULL;
        }
        pgw_grpc_call_unref(c);
        return;
    }
    post_request(s, method_index(c->method)); /* keep as many posted */
    atomic_fetch_add(&s->in_flight, 1);
    c->started_us = pgw_now_mono_us();
    c->method->on_new(c);
}

static void *cq_thread(void *arg)
{
    pgw_grpc_server *s = arg;
    for (;;) {
        gpr_timespec wake =
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(TICK_MS, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(s->cq, wake, NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_QUEUE_TIMEOUT) {
            tick_methods(s);
            continue;
        }
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        pgw_grpc_tag *tag = ev.tag;
        if (tag == &s->shutdown_tag) {
            pthread_mutex_lock(&s->mu);
            s->shutdown_done = 1;
            pthread_cond_broadcast(&s->cond);
            pthread_mutex_unlock(&s->mu);
            continue;
        }
        pgw_grpc_call *c = tag->call;
        const pgw_grpc_method *m = c->method;
        switch (tag->kind) {
        case PGW_GRPC_TAG_NEW:
            on_new_call(s, c, ev.success);
            continue; /* on_new owns the reference */
        case PGW_GRPC_TAG_SEND:
            if (m->on_send_done)
                m->on_send_done(c, ev.success);
            break;
        case PGW_GRPC_TAG_RECV:
            if (m->on_recv_done)
                m->on_recv_done(c, ev.success);
            break;
        case PGW_GRPC_TAG_CLOSE:
            if (m->on_close)
                m->on_close(c);
            break;
        }
        pgw_grpc_call_unref(c); /* the batch's reference */
    }
    return NULL;
}

/* --- TLS ---------------------------------------------------------------------------------- */

/* The listening port's credentials: plain text, or TLS / mutual TLS with the material that
 * service/tls_reload.h keeps current as its files rotate. NULL with err set on failure. */
static grpc_server_credentials *make_credentials(const pgw_grpc_server_options *o, char *err,
                                                 size_t err_len)
{
    if (!o->tls_cert_file)
        return grpc_insecure_server_credentials_create();
    grpc_server_credentials *creds = o->tls ? pgw_tls_reload_server_credentials(o->tls) : NULL;
    if (!creds)
        snprintf(err, err_len, "--tls-cert: gRPC refused the TLS certificate or key");
    return creds;
}

pgw_grpc_server *pgw_grpc_server_new(const pgw_grpc_server_options *options, char *err,
                                     size_t err_len)
{
    pgw_grpc_server *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    s->options = *options;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->shutdown_tag.kind = PGW_GRPC_TAG_NEW;

    grpc_arg args[2] = {
        {.type = GRPC_ARG_INTEGER,
         .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = options->max_recv_bytes},
        /* A second gateway on a busy port must fail, not silently share it. */
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0},
    };
    grpc_channel_args channel_args = {2, args};
    s->server = grpc_server_create(&channel_args, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    for (size_t i = 0; i < N_METHODS; i++) {
        const pgw_grpc_method *m = METHODS[i];
        if (m->server_init) {
            if (m->server_init(s, &s->state[i], err, err_len) != 0) {
                pgw_grpc_server_free(s);
                return NULL;
            }
        }
        s->initialized[i] = 1;
        if (m->path)
            s->registered[i] = grpc_server_register_method(
                s->server, m->path, NULL,
                m->reads_payload ? GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER
                                 : GRPC_SRM_PAYLOAD_NONE,
                0);
    }
    grpc_server_credentials *creds = make_credentials(options, err, err_len);
    if (!creds) {
        pgw_grpc_server_free(s);
        return NULL;
    }
    s->port = grpc_server_add_http2_port(s->server, options->addr, creds);
    grpc_server_credentials_release(creds);
    if (s->port <= 0) {
        snprintf(err, err_len, "--grpc-addr: cannot listen on %s", options->addr);
        pgw_grpc_server_free(s);
        return NULL;
    }
    return s;
}

int pgw_grpc_server_port(const pgw_grpc_server *s)
{
    return s->port;
}

int pgw_grpc_server_start(pgw_grpc_server *s)
{
    grpc_server_start(s->server);
    s->threads = calloc((size_t)s->options.threads, sizeof(pthread_t));
    if (!s->threads)
        return -1;
    for (int t = 0; t < s->options.threads; t++)
        for (size_t i = 0; i < N_METHODS; i++)
            for (int k = 0; k < METHODS[i]->posted_per_thread; k++)
                post_request(s, i);
    for (int t = 0; t < s->options.threads; t++) {
        if (pthread_create(&s->threads[t], NULL, cq_thread, s) != 0)
            return -1;
        s->n_threads++;
    }
    return 0;
}

static int shutdown_notified(pgw_grpc_server *s)
{
    return s->shutdown_done;
}

static int no_live_calls(pgw_grpc_server *s)
{
    return atomic_load(&s->live_calls) == 0;
}

/* Waits on the server's condition variable until done(s) holds or timeout_ms passes (-1:
 * forever). Returns whether it holds. */
static int wait_until(pgw_grpc_server *s, int (*done)(pgw_grpc_server *), int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&s->mu);
    while (!done(s)) {
        if (timeout_ms < 0)
            pthread_cond_wait(&s->cond, &s->mu);
        else if (pthread_cond_timedwait(&s->cond, &s->mu, &until) != 0)
            break;
    }
    int ok = done(s);
    pthread_mutex_unlock(&s->mu);
    return ok;
}

void pgw_grpc_server_stop_accepting(pgw_grpc_server *s)
{
    if (atomic_exchange(&s->shutting_down, 1))
        return;
    grpc_server_shutdown_and_notify(s->server, s->cq, &s->shutdown_tag);
    tick_methods(s); /* Health/Watch streams get NOT_SERVING, then their final status */
}

void pgw_grpc_server_shutdown(pgw_grpc_server *s, int grace_ms)
{
    pgw_grpc_server_stop_accepting(s);
    if (s->n_threads == 0) {
        grpc_server_cancel_all_calls(s->server);
    } else if (!wait_until(s, shutdown_notified, grace_ms)) {
        pgw_log(PGW_LOG_WARN, "grace period over: cancelling the calls still in flight",
                json_pack("{s:i}", "in_flight", atomic_load(&s->in_flight)));
        grpc_server_cancel_all_calls(s->server);
    }
    if (s->n_threads) {
        wait_until(s, shutdown_notified, -1);
        /* The loop may still hold a call gRPC is done with (it answered, but has not dropped
         * its reference yet), and the completion-queue threads still fail the requests we had
         * posted: wait for the last of them. */
        if (!wait_until(s, no_live_calls, 10000))
            pgw_log(PGW_LOG_ERROR, "calls still referenced 10 s after shutdown",
                    json_pack("{s:i}", "calls", atomic_load(&s->live_calls)));
    }
}

void pgw_grpc_server_free(pgw_grpc_server *s)
{
    if (!s)
        return;
    if (s->server)
        grpc_server_destroy(s->server);
    if (s->cq) {
        grpc_completion_queue_shutdown(s->cq);
        if (s->n_threads) {
            for (int t = 0; t < s->n_threads; t++)
                pthread_join(s->threads[t], NULL);
        } else {
            while (
                grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
                GRPC_QUEUE_SHUTDOWN)
                ;
        }
        grpc_completion_queue_destroy(s->cq);
    }
    for (size_t i = 0; i < N_METHODS; i++)
        if (s->initialized[i] && METHODS[i]->server_free)
            METHODS[i]->server_free(s->state[i]);
    free(s->threads);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int pgw_grpc_server_in_flight(const pgw_grpc_server *s)
{
    return atomic_load(&s->in_flight);
}

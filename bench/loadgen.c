/* An evenly paced, open-loop gRPC unary load generator on the gRPC core C API, for latency
 * figures that h2load's --rps cannot give: h2load fires every client's requests together on
 * a timer tick, so its latencies measure its own bursts. Here call i is due at start + i/rate,
 * it is sent on schedule whatever is still outstanding, and its latency runs from the
 * *scheduled* time (or the send, if that was earlier), so a stalled server or a late sender
 * shows up in the figures instead of silently lowering the offered load (coordinated
 * omission). A closed-loop mode (--concurrency) keeps C calls outstanding, for the max rate.
 *
 * Output: one line of JSON on stdout (rates in calls/s, latencies in µs).
 * Usage: see usage() below. */
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/byte_buffer.h>
#include <grpc/support/time.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#define MAX_CHANNELS      64
#define MAX_CQ_THREADS    8
#define MAX_METADATA      8
#define MAX_REQUEST_BYTES (4 * 1024 * 1024)
#define NUM_CODES         17 /* grpc_status_code values 0..16 */
/* Latencies kept per completion-queue thread; beyond this calls are counted, not sampled. */
#define MAX_SAMPLES_PER_THREAD (64u * 1024 * 1024)

typedef struct options {
    const char *target;
    const char *method;
    const char *request_file;
    double rate;         /* calls/s; 0 in closed-loop mode */
    int concurrency;     /* closed-loop mode when > 0 */
    double duration_s;   /* measured time, after the warm-up */
    uint64_t count;      /* measured calls, after the warm-up; 0: use duration_s */
    int channels;        /* separate HTTP/2 connections, used round-robin */
    double warmup_s;     /* calls scheduled (issued) in this first period are not measured */
    int max_outstanding; /* open loop: the sender waits (and the call turns late) beyond this */
    int cq_threads;
    int timeout_ms;    /* per-call deadline; 0: none */
    int late_us;       /* a send this much after its due time counts as late */
    int batch_us;      /* sends due within this much of now go out together */
    int minimal_stack; /* GRPC_ARG_MINIMAL_STACK on the channels */
    int metadata_count;
    grpc_metadata metadata[MAX_METADATA];
} options;

typedef struct call_state {
    grpc_call *call;
    uint64_t start_ns; /* latency origin: min(scheduled, sent) */
    int measured;      /* issued after the warm-up */
    grpc_byte_buffer *send_buf;
    grpc_byte_buffer *recv_buf;
    grpc_metadata_array initial_md;
    grpc_metadata_array trailing_md;
    grpc_status_code status;
    grpc_slice details;
    struct call_state *next_free;
} call_state;

/* Per completion-queue thread, merged at the end, so completions take no lock. */
typedef struct thread_stats {
    uint64_t *lat_ns;
    size_t n, cap;
    uint64_t completed; /* measured calls */
    uint64_t unsampled; /* measured calls beyond MAX_SAMPLES_PER_THREAD */
    uint64_t ok, no_message, other_code;
    uint64_t by_code[NUM_CODES];
    uint64_t last_end_ns;
} thread_stats;

static options opt;
static grpc_completion_queue *cq;
static grpc_channel *channels[MAX_CHANNELS];
static void *registered[MAX_CHANNELS];
static grpc_slice request_slice;
static thread_stats stats[MAX_CQ_THREADS];
static call_state *states;

/* Slot pool and the outstanding count, shared by the sender and the CQ threads. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slot_freed = PTHREAD_COND_INITIALIZER;
static call_state *free_list;
static int outstanding;

static atomic_uint_fast64_t issued;          /* calls started */
static atomic_uint_fast64_t measured_issued; /* closed loop: measured calls started */
static atomic_uint_fast64_t start_failures;
static atomic_int stop_issuing;
static uint64_t run_start_ns, warm_end_ns, run_end_ns;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_until_ns(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000u), .tv_nsec = (long)(t % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: pgw-bench-loadgen --target HOST:PORT --method /pkg.Service/Method\n"
            "         --request FILE (serialized request, no gRPC frame header)\n"
            "         (--rate N | --concurrency C) (--duration S | --count N)\n"
            "         [--channels K=4] [--warmup S=1] [--max-outstanding M=10000]\n"
            "         [--cq-threads T=1] [--timeout-ms MS=10000, 0=none] [--late-us US=1000]\n"
            "         [--batch-us US=50] [--minimal-stack 0|1] [--metadata key=value]...\n"
            "  --rate: open loop, call i due at start + i/N, latency from the due time\n"
            "  --concurrency: closed loop, C calls kept outstanding (max throughput)\n");
}

/* Parses argv into opt; returns 0, or -1 after printing why. */
static int parse_args(int argc, char **argv)
{
    opt.channels = 4;
    opt.warmup_s = 1;
    opt.max_outstanding = 10000;
    opt.cq_threads = 1;
    opt.timeout_ms = 10000;
    opt.late_us = 1000;
    opt.batch_us = 50;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            exit(0);
        }
        if (!v) {
            fprintf(stderr, "%s needs a value\n", a);
            return -1;
        }
        i++;
        if (!strcmp(a, "--target"))
            opt.target = v;
        else if (!strcmp(a, "--method"))
            opt.method = v;
        else if (!strcmp(a, "--request"))
            opt.request_file = v;
        else if (!strcmp(a, "--rate"))
            opt.rate = atof(v);
        else if (!strcmp(a, "--concurrency"))
            opt.concurrency = atoi(v);
        else if (!strcmp(a, "--duration"))
            opt.duration_s = atof(v);
        else if (!strcmp(a, "--count"))
            opt.count = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--channels"))
            opt.channels = atoi(v);
        else if (!strcmp(a, "--warmup"))
            opt.warmup_s = atof(v);
        else if (!strcmp(a, "--max-outstanding"))
            opt.max_outstanding = atoi(v);
        else if (!strcmp(a, "--cq-threads"))
            opt.cq_threads = atoi(v);
        else if (!strcmp(a, "--timeout-ms"))
            opt.timeout_ms = atoi(v);
        else if (!strcmp(a, "--late-us"))
            opt.late_us = atoi(v);
        else if (!strcmp(a, "--batch-us"))
            opt.batch_us = atoi(v);
        else if (!strcmp(a, "--minimal-stack"))
            opt.minimal_stack = atoi(v);
        else if (!strcmp(a, "--metadata")) {
            const char *eq = strchr(v, '=');
            if (!eq || eq == v || opt.metadata_count == MAX_METADATA) {
                fprintf(stderr, "--metadata wants key=value (at most %d)\n", MAX_METADATA);
                return -1;
            }
            grpc_metadata *m = &opt.metadata[opt.metadata_count++];
            memset(m, 0, sizeof(*m));
            m->key = grpc_slice_from_copied_buffer(v, (size_t)(eq - v));
            m->value = grpc_slice_from_copied_string(eq + 1);
        } else {
            fprintf(stderr, "unknown option %s\n", a);
            return -1;
        }
    }
    if (!opt.target || !opt.method || !opt.request_file) {
        fprintf(stderr, "--target, --method and --request are required\n");
        return -1;
    }
    if ((opt.rate > 0) == (opt.concurrency > 0)) {
        fprintf(stderr, "give exactly one of --rate and --concurrency\n");
        return -1;
    }
    if ((opt.duration_s > 0) == (opt.count > 0)) {
        fprintf(stderr, "give exactly one of --duration and --count\n");
        return -1;
    }
    if (opt.channels < 1 || opt.channels > MAX_CHANNELS || opt.cq_threads < 1 ||
        opt.cq_threads > MAX_CQ_THREADS || opt.max_outstanding < 1 || opt.warmup_s < 0 ||
        opt.timeout_ms < 0 || opt.late_us < 0 || opt.batch_us < 0 || opt.rate > 1e7 ||
        opt.concurrency > 100000) {
        fprintf(stderr, "an option is out of range\n");
        return -1;
    }
    if (opt.concurrency > 0)
        opt.max_outstanding = opt.concurrency;
    return 0;
}

/* Reads the whole request file (bounded) into request_slice; returns 0 or -1. */
static int read_request(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    static uint8_t buf[MAX_REQUEST_BYTES + 1];
    size_t n = fread(buf, 1, sizeof(buf), f);
    int bad = ferror(f) || n > MAX_REQUEST_BYTES;
    fclose(f);
    if (bad) {
        fprintf(stderr, "%s: unreadable or larger than %d bytes\n", path, MAX_REQUEST_BYTES);
        return -1;
    }
    request_slice = grpc_slice_from_copied_buffer((const char *)buf, n);
    return 0;
}

static void slot_release(call_state *c)
{
    pthread_mutex_lock(&lock);
    c->next_free = free_list;
    free_list = c;
    outstanding--;
    pthread_cond_broadcast(&slot_freed);
    pthread_mutex_unlock(&lock);
}

/* Takes a free slot, waiting while max_outstanding calls are in flight (never NULL). */
static call_state *slot_acquire(void)
{
    pthread_mutex_lock(&lock);
    while (!free_list)
        pthread_cond_wait(&slot_freed, &lock);
    call_state *c = free_list;
    free_list = c->next_free;
    outstanding++;
    pthread_mutex_unlock(&lock);
    return c;
}

/* Starts one unary call in slot c, latency measured from start_ns. Returns 0, or -1 if the
 * batch was refused (then no tag will arrive and the slot is still the caller's). */
static int start_call(call_state *c, uint64_t start_ns, int measured)
{
    uint64_t seq = atomic_fetch_add(&issued, 1);
    int ch = (int)(seq % (uint64_t)opt.channels);
    gpr_timespec deadline = opt.timeout_ms > 0
                                ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                               gpr_time_from_millis(opt.timeout_ms, GPR_TIMESPAN))
                                : gpr_inf_future(GPR_CLOCK_MONOTONIC);
    c->call = grpc_channel_create_registered_call(channels[ch], NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                                  registered[ch], deadline, NULL);
    c->start_ns = start_ns;
    c->measured = measured;
    c->send_buf = grpc_raw_byte_buffer_create(&request_slice, 1);
    c->recv_buf = NULL;
    grpc_metadata_array_init(&c->initial_md);
    grpc_metadata_array_init(&c->trailing_md);
    c->status = GRPC_STATUS_UNKNOWN;
    c->details = grpc_empty_slice();

    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = (size_t)opt.metadata_count;
    ops[0].data.send_initial_metadata.metadata = opt.metadata_count ? opt.metadata : NULL;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = c->send_buf;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &c->recv_buf;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &c->trailing_md;
    ops[5].data.recv_status_on_client.status = &c->status;
    ops[5].data.recv_status_on_client.status_details = &c->details;
    if (grpc_call_start_batch(c->call, ops, 6, c, NULL) != GRPC_CALL_OK) {
        grpc_call_unref(c->call);
        grpc_byte_buffer_destroy(c->send_buf);
        grpc_metadata_array_destroy(&c->initial_md);
        grpc_metadata_array_destroy(&c->trailing_md);
        atomic_fetch_add(&start_failures, 1);
        return -1;
    }
    return 0;
}

/* Records a finished call's outcome and frees what the call owned (not the slot). */
static void finish_call(call_state *c, int success, uint64_t end_ns, thread_stats *st)
{
    if (c->measured) {
        st->completed++;
        if (!success)
            st->other_code++; /* the batch itself failed: no status was received */
        else if ((unsigned)c->status < NUM_CODES)
            st->by_code[c->status]++;
        else
            st->other_code++;
        if (success && c->status == GRPC_STATUS_OK) {
            st->ok++;
            if (!c->recv_buf)
                st->no_message++;
        }
        if (st->n == st->cap && st->cap < MAX_SAMPLES_PER_THREAD) {
            size_t cap = st->cap ? st->cap * 2 : 65536;
            uint64_t *p = realloc(st->lat_ns, cap * sizeof(*p));
            if (p) {
                st->lat_ns = p;
                st->cap = cap;
            }
        }
        if (st->n < st->cap)
            st->lat_ns[st->n++] = end_ns > c->start_ns ? end_ns - c->start_ns : 0;
        else
            st->unsampled++;
        if (end_ns > st->last_end_ns)
            st->last_end_ns = end_ns;
    }
    grpc_call_unref(c->call);
    c->call = NULL;
    grpc_byte_buffer_destroy(c->send_buf);
    if (c->recv_buf)
        grpc_byte_buffer_destroy(c->recv_buf);
    grpc_metadata_array_destroy(&c->initial_md);
    grpc_metadata_array_destroy(&c->trailing_md);
    grpc_slice_unref(c->details);
}

/* Closed loop: whether another call may start now, and if so whether it is measured. */
static int closed_loop_next(uint64_t now, int *measured)
{
    if (atomic_load(&stop_issuing))
        return 0;
    *measured = now >= warm_end_ns;
    if (!*measured)
        return 1;
    if (opt.count) {
        if (atomic_fetch_add(&measured_issued, 1) >= opt.count) {
            atomic_store(&stop_issuing, 1);
            return 0;
        }
    } else if (now >= run_end_ns) {
        atomic_store(&stop_issuing, 1);
        return 0;
    }
    return 1;
}

static int connect_tag; /* tag of connectivity watches, never a call */

/* A completion-queue thread: records completions; in closed-loop mode restarts the slot. */
static void *drain(void *arg)
{
    thread_stats *st = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            return NULL;
        if (ev.type != GRPC_OP_COMPLETE || ev.tag == &connect_tag)
            continue;
        call_state *c = ev.tag;
        uint64_t end = now_ns();
        finish_call(c, ev.success, end, st);
        int measured;
        if (opt.concurrency > 0 && closed_loop_next(end, &measured) &&
            start_call(c, now_ns(), measured) == 0)
            continue;
        slot_release(c);
    }
}

/* Waits until every channel is READY (so connection set-up is not measured); returns 0/-1. */
static int connect_channels(void)
{
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_seconds(10, GPR_TIMESPAN));
    for (int i = 0; i < opt.channels; i++) {
        for (;;) {
            grpc_connectivity_state s = grpc_channel_check_connectivity_state(channels[i], 1);
            if (s == GRPC_CHANNEL_READY)
                break;
            if (gpr_time_cmp(gpr_now(GPR_CLOCK_MONOTONIC), deadline) > 0) {
                fprintf(stderr, "channel %d to %s not ready after 10 s\n", i, opt.target);
                return -1;
            }
            grpc_channel_watch_connectivity_state(channels[i], s, deadline, cq, &connect_tag);
            grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        }
    }
    return 0;
}

/* Open loop: sends call i at run_start + i/rate, on schedule. Returns the late-send count. */
static uint64_t run_open_loop(uint64_t *max_lag_ns)
{
    prctl(PR_SET_TIMERSLACK, 1UL); /* the default 50 µs slack would skew the schedule */
    double period_ns = 1e9 / opt.rate;
    uint64_t warm_calls = (uint64_t)ceil(opt.warmup_s * opt.rate);
    uint64_t total =
        warm_calls + (opt.count ? opt.count : (uint64_t)llround(opt.duration_s * opt.rate));
    uint64_t late = 0, batch_ns = (uint64_t)opt.batch_us * 1000u;
    uint64_t late_ns = (uint64_t)opt.late_us * 1000u;
    warm_end_ns = run_start_ns + (uint64_t)llround((double)warm_calls * period_ns);
    *max_lag_ns = 0;
    for (uint64_t i = 0; i < total;) {
        uint64_t due = run_start_ns + (uint64_t)llround((double)i * period_ns);
        uint64_t now = now_ns();
        if (due > now + batch_ns) {
            sleep_until_ns(due);
            now = now_ns();
        }
        /* Everything due by now (plus the batching window) goes out in one go. */
        while (i < total) {
            due = run_start_ns + (uint64_t)llround((double)i * period_ns);
            if (due > now + batch_ns)
                break;
            call_state *c = slot_acquire();
            uint64_t sent = now_ns();
            if (sent > due + late_ns)
                late++;
            if (sent > due && sent - due > *max_lag_ns)
                *max_lag_ns = sent - due;
            if (start_call(c, sent < due ? sent : due, i >= warm_calls) != 0)
                slot_release(c);
            i++;
            now = sent;
        }
    }
    return late;
}

/* Closed loop: starts `concurrency` calls; the CQ threads keep restarting them. */
static void run_closed_loop(void)
{
    warm_end_ns = run_start_ns + (uint64_t)llround(opt.warmup_s * 1e9);
    run_end_ns = warm_end_ns + (uint64_t)llround(opt.duration_s * 1e9);
    for (int i = 0; i < opt.concurrency; i++) {
        int measured;
        uint64_t now = now_ns();
        if (!closed_loop_next(now, &measured))
            break;
        call_state *c = slot_acquire();
        if (start_call(c, now, measured) != 0)
            slot_release(c);
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of the sorted samples, in µs. */
static double pct_us(const uint64_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t k = (size_t)ceil(p * (double)n);
    if (k < 1)
        k = 1;
    return (double)v[k - 1] / 1000.0;
}

/* Merges the per-thread stats and prints the JSON line. */
static void report(uint64_t late, uint64_t max_lag_ns)
{
    thread_stats all;
    memset(&all, 0, sizeof(all));
    size_t n = 0;
    for (int t = 0; t < opt.cq_threads; t++)
        n += stats[t].n;
    all.lat_ns = malloc((n ? n : 1) * sizeof(uint64_t));
    for (int t = 0; t < opt.cq_threads; t++) {
        thread_stats *s = &stats[t];
        if (all.lat_ns && s->n)
            memcpy(all.lat_ns + all.n, s->lat_ns, s->n * sizeof(uint64_t));
        all.n += all.lat_ns ? s->n : 0;
        all.completed += s->completed;
        all.unsampled += s->unsampled;
        all.ok += s->ok;
        all.no_message += s->no_message;
        all.other_code += s->other_code;
        for (int k = 0; k < NUM_CODES; k++)
            all.by_code[k] += s->by_code[k];
        if (s->last_end_ns > all.last_end_ns)
            all.last_end_ns = s->last_end_ns;
    }
    qsort(all.lat_ns, all.n, sizeof(uint64_t), cmp_u64);
    double sum = 0;
    for (size_t i = 0; i < all.n; i++)
        sum += (double)all.lat_ns[i];
    double window_s =
        all.last_end_ns > warm_end_ns ? (double)(all.last_end_ns - warm_end_ns) / 1e9 : 0;
    printf("{\"mode\":\"%s\",\"target_rate\":%.0f,\"concurrency\":%d,\"channels\":%d,"
           "\"rate\":%.1f,\"seconds\":%.3f,\"count\":%llu,\"ok\":%llu,\"errors\":{",
           opt.concurrency > 0 ? "closed" : "open", opt.rate, opt.concurrency, opt.channels,
           window_s > 0 ? (double)all.completed / window_s : 0, window_s,
           (unsigned long long)all.completed, (unsigned long long)all.ok);
    const char *sep = "";
    for (int k = 1; k < NUM_CODES; k++) {
        if (all.by_code[k]) {
            printf("%s\"%d\":%llu", sep, k, (unsigned long long)all.by_code[k]);
            sep = ",";
        }
    }
    if (all.other_code)
        printf("%s\"other\":%llu", sep, (unsigned long long)all.other_code);
    printf("},\"ok_without_message\":%llu,\"start_failures\":%llu,\"late\":%llu,"
           "\"max_send_lag_us\":%.1f,\"unsampled\":%llu,\"mean_us\":%.1f,\"p50_us\":%.1f,"
           "\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f}\n",
           (unsigned long long)all.no_message, (unsigned long long)atomic_load(&start_failures),
           (unsigned long long)late, (double)max_lag_ns / 1000.0, (unsigned long long)all.unsampled,
           all.n ? sum / (double)all.n / 1000.0 : 0, pct_us(all.lat_ns, all.n, 0.50),
           pct_us(all.lat_ns, all.n, 0.90), pct_us(all.lat_ns, all.n, 0.99),
           pct_us(all.lat_ns, all.n, 0.999), all.n ? (double)all.lat_ns[all.n - 1] / 1000.0 : 0);
    fflush(stdout);
    free(all.lat_ns);
}

int main(int argc, char **argv)
{
    int rc = 1, nthreads = 0, nchannels = 0;
    pthread_t threads[MAX_CQ_THREADS];
    uint64_t late = 0, max_lag_ns = 0;

    grpc_init();
    if (parse_args(argc, argv) != 0) {
        usage();
        goto out;
    }
    if (read_request(opt.request_file) != 0)
        goto out;
    states = calloc((size_t)opt.max_outstanding, sizeof(*states));
    if (!states)
        goto out;
    for (int i = opt.max_outstanding - 1; i >= 0; i--) {
        states[i].next_free = free_list;
        free_list = &states[i];
    }

    cq = grpc_completion_queue_create_for_next(NULL);
    /* A local subchannel pool gives each channel its own connection (the global pool would
     * share one), and no retries keeps the client's per-call work to what a client must do. */
    grpc_arg args[3];
    memset(args, 0, sizeof(args));
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
    args[0].value.integer = 1;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_ENABLE_RETRIES;
    args[1].value.integer = 0;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_MINIMAL_STACK;
    args[2].value.integer = opt.minimal_stack;
    grpc_channel_args chargs = {.num_args = 3, .args = args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    for (; nchannels < opt.channels; nchannels++) {
        channels[nchannels] = grpc_channel_create(opt.target, creds, &chargs);
        registered[nchannels] =
            grpc_channel_register_call(channels[nchannels], opt.method, NULL, NULL);
    }
    grpc_channel_credentials_release(creds);
    if (connect_channels() != 0)
        goto out;

    for (; nthreads < opt.cq_threads; nthreads++)
        pthread_create(&threads[nthreads], NULL, drain, &stats[nthreads]);

    run_start_ns = now_ns();
    if (opt.concurrency > 0)
        run_closed_loop();
    else
        late = run_open_loop(&max_lag_ns);

    /* Wait for every outstanding call; the closed loop stops itself at the count/duration. */
    pthread_mutex_lock(&lock);
    while (outstanding > 0)
        pthread_cond_wait(&slot_freed, &lock);
    pthread_mutex_unlock(&lock);
    report(late, max_lag_ns);
    rc = 0;

out:
    for (int i = 0; i < nchannels; i++)
        grpc_channel_destroy(channels[i]);
    if (cq) {
        grpc_completion_queue_shutdown(cq);
        if (nthreads == 0) {
            while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
                   GRPC_QUEUE_SHUTDOWN)
                ;
        }
        for (int i = 0; i < nthreads; i++)
            pthread_join(threads[i], NULL);
        grpc_completion_queue_destroy(cq);
    }
    for (int i = 0; i < opt.metadata_count; i++) {
        grpc_slice_unref(opt.metadata[i].key);
        grpc_slice_unref(opt.metadata[i].value);
    }
    grpc_slice_unref(request_slice);
    grpc_shutdown();
    for (int t = 0; t < MAX_CQ_THREADS; t++)
        free(stats[t].lat_ns);
    free(states);
    return rc;
}

/* Fuzz target: watch events (service/watch.c). A watched ARN's group hears of the job from
 * fill notices (any replica's, over Redis pub/sub: untrusted bytes, a cache entry each) and
 * from the loop's catch-ups, while streams attach (with whatever job they were last sent) and
 * detach. The input is a script of such events:
 *
 *   op byte, then for ops with a payload a length byte and that many bytes:
 *     0 attach a watcher whose last message was the payload (raw bytes: may not decode)
 *     1 fill notice with the payload as the entry (raw bytes)
 *     2 fill notice built from the payload: a valid entry whose job has a status and a
 *       last-updated time the payload chooses (so ordering is explored, not only decoding)
 *     3 NOT_FOUND fill notice for the payload's choice of ARN
 *     4 detach the watcher the payload names
 *     5 run the loop once (catch-ups)
 *
 * Invariants: no callback inside pgw_watch_attach; a watcher hears only news (status or
 * last-updated time differ from its last message, and the time is not older), a job that
 * decodes, `final` exactly on a terminal status or NOT_FOUND, and nothing after its final
 * update; a valid positive notice that is news by those rules reaches every live watcher; the
 * registry's stream count is always the number of live watchers. */
#include <event2/event.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache/entry.h"
#include "fuzz_util.h"
#include "personalize_gateway/v1/personalize_gateway.pb-c.h"
#include "service/watch.h"

#define MAX_WATCHERS 8
#define ARN_A        "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/a"
#define ARN_B        "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/b"

static const char *const STATUSES[] = {
    "CREATE PENDING", "CREATE IN_PROGRESS", "ACTIVE", "CREATE FAILED", "", "active"};

/* What the model remembers of a message: what watch.c compares (status, last-updated). */
typedef struct seen {
    int valid;
    char *status; /* owned */
    int64_t s;
    int32_t ns;
} seen;

typedef struct model_watcher {
    pgw_watcher *w; /* NULL when not attached */
    int arn_b;
    int final_seen;
    int calls; /* callbacks since the last notice */
    seen last;
} model_watcher;

static struct event_base *base;
static model_watcher watchers[MAX_WATCHERS];
static int in_attach;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    base = event_base_new();
    return base ? 0 : 1;
}

static void seen_clear(seen *s)
{
    free(s->status);
    memset(s, 0, sizeof(*s));
}

static void seen_of(const uint8_t *pb, size_t len, seen *out)
{
    memset(out, 0, sizeof(*out));
    PersonalizeGateway__V1__BatchInferenceJob *job =
        personalize_gateway__v1__batch_inference_job__unpack(NULL, len, pb);
    if (!job)
        return;
    out->valid = 1;
    out->status = strdup(job->status ? job->status : "");
    if (job->last_updated_date_time) {
        out->s = job->last_updated_date_time->seconds;
        out->ns = job->last_updated_date_time->nanos;
    }
    personalize_gateway__v1__batch_inference_job__free_unpacked(job, NULL);
}

/* watch.c compares the status in a 64-byte buffer: the model only judges statuses that fit. */
static int comparable(const seen *s)
{
    return !s->valid || strlen(s->status) < 63;
}

static int is_news(const seen *k, const seen *last)
{
    if (!last->valid)
        return 1;
    int equal = k->s == last->s && k->ns == last->ns && strcmp(k->status, last->status) == 0;
    int older = k->s < last->s || (k->s == last->s && k->ns < last->ns);
    return !equal && !older;
}

static int terminal(const char *status)
{
    return strcmp(status, "ACTIVE") == 0 || strcmp(status, "CREATE FAILED") == 0;
}

static void on_update(const pgw_watch_update *u, void *user_data)
{
    model_watcher *m = user_data;
    FUZZ_ASSERT(!in_attach);
    FUZZ_ASSERT(m->w != NULL && !m->final_seen);
    FUZZ_ASSERT(u->message != NULL);
    m->calls++;
    if (u->code == PGW_OK) {
        seen k;
        seen_of(u->job_pb, u->job_pb_len, &k);
        FUZZ_ASSERT(k.valid);
        FUZZ_ASSERT(is_news(&k, &m->last));
        FUZZ_ASSERT(u->final == terminal(k.status));
        seen_clear(&m->last);
        m->last = k;
    } else {
        FUZZ_ASSERT(u->final);
    }
    if (u->final) {
        m->final_seen = 1;
        m->w = NULL; /* detached by the registry */
    }
}

static size_t live_watchers(void)
{
    size_t n = 0;
    for (int i = 0; i < MAX_WATCHERS; i++)
        n += watchers[i].w != NULL;
    return n;
}

static void check_streams(pgw_watch_registry *reg)
{
    pgw_watch_stats st;
    pgw_watch_stats_get(reg, &st);
    FUZZ_ASSERT(st.streams == live_watchers());
}

static void attach(pgw_watch_registry *reg, const uint8_t *p, size_t n, int arn_b)
{
    int slot = -1;
    for (int i = 0; i < MAX_WATCHERS && slot < 0; i++)
        if (!watchers[i].w)
            slot = i;
    if (slot < 0 || pgw_watch_reserve(reg) != PGW_WATCH_RESERVED)
        return;
    model_watcher *m = &watchers[slot];
    seen_clear(&m->last);
    seen_of(p, n, &m->last);
    m->final_seen = 0;
    m->arn_b = arn_b;
    in_attach = 1;
    m->w = pgw_watch_attach(reg, arn_b ? ARN_B : ARN_A, p, n, on_update, m);
    in_attach = 0;
    FUZZ_ASSERT(m->w != NULL); /* no allocation failures here */
}

/* A valid positive entry whose job the payload describes: status, then last-updated time. */
static uint8_t *built_entry(const uint8_t *p, size_t n, size_t *len, seen *job_seen)
{
    PersonalizeGateway__V1__BatchInferenceJob job =
        PERSONALIZE_GATEWAY__V1__BATCH_INFERENCE_JOB__INIT;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    job.batch_inference_job_arn = (char *)ARN_A;
    job.status = (char *)STATUSES[(n > 0 ? p[0] : 0) % (sizeof(STATUSES) / sizeof(STATUSES[0]))];
    if (n > 1 && p[1] != 0xff) {
        ts.seconds = 1700000000 + (p[1] & 0x0f);
        ts.nanos = (n > 2 ? p[2] % 4 : 0) * 250000000;
        job.last_updated_date_time = &ts;
    }
    size_t pb_len = personalize_gateway__v1__batch_inference_job__get_packed_size(&job);
    uint8_t *pb = malloc(pb_len ? pb_len : 1);
    if (!pb)
        return NULL;
    personalize_gateway__v1__batch_inference_job__pack(&job, pb);
    seen_of(pb, pb_len, job_seen);
    pgw_cache_entry e = {.kind = PGW_CACHE_ENTRY_POSITIVE,
                         .fetched_at_ms = 1,
                         .fresh_until_ms = 2,
                         .stale_until_ms = 3,
                         .job_pb = pb,
                         .job_pb_len = pb_len};
    uint8_t *out = pgw_cache_entry_encode(&e, len);
    free(pb);
    return out;
}

static void reset_calls(void)
{
    for (int i = 0; i < MAX_WATCHERS; i++)
        watchers[i].calls = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pgw_watch_options opt = {.base = base, .poll_interval_ms = 3600 * 1000, .max_streams = 6};
    pgw_watch_registry *reg = pgw_watch_registry_new(&opt);
    FUZZ_ASSERT(reg != NULL);
    memset(watchers, 0, sizeof(watchers));

    size_t i = 0;
    while (i < size) {
        uint8_t op = data[i++] % 6;
        const uint8_t *p = NULL;
        size_t n = 0;
        if (op != 5) {
            if (i >= size)
                break;
            n = data[i++];
            if (n > size - i)
                n = size - i;
            p = data + i;
            i += n;
        }
        reset_calls();
        switch (op) {
        case 0:
            attach(reg, p, n, n > 0 && (p[0] & 0x80));
            break;
        case 1:
            pgw_watch_on_fill(ARN_A, p, n, reg);
            break;
        case 2: {
            size_t len = 0;
            seen k;
            uint8_t *entry = built_entry(p, n, &len, &k);
            FUZZ_ASSERT(entry != NULL);
            /* Who should hear it, judged before delivery changes anything. */
            int want[MAX_WATCHERS];
            for (int w = 0; w < MAX_WATCHERS; w++)
                want[w] = watchers[w].w && !watchers[w].arn_b && comparable(&watchers[w].last) &&
                          is_news(&k, &watchers[w].last);
            pgw_watch_on_fill(ARN_A, entry, len, reg);
            for (int w = 0; w < MAX_WATCHERS; w++) {
                FUZZ_ASSERT(watchers[w].calls <= 1);
                if (want[w])
                    FUZZ_ASSERT(watchers[w].calls == 1);
                if (watchers[w].arn_b)
                    FUZZ_ASSERT(watchers[w].calls == 0);
            }
            seen_clear(&k);
            free(entry);
            break;
        }
        case 3: {
            int arn_b = n > 0 && (p[0] & 1);
            pgw_cache_entry e = {.kind = PGW_CACHE_ENTRY_NEGATIVE,
                                 .fetched_at_ms = 1,
                                 .fresh_until_ms = 2,
                                 .stale_until_ms = 3};
            strcpy(e.error_code, "ResourceNotFoundException");
            strcpy(e.message, "gone");
            size_t len = 0;
            uint8_t *entry = pgw_cache_entry_encode(&e, &len);
            FUZZ_ASSERT(entry != NULL);
            int had[MAX_WATCHERS];
            for (int w = 0; w < MAX_WATCHERS; w++)
                had[w] = watchers[w].w && watchers[w].arn_b == arn_b;
            pgw_watch_on_fill(arn_b ? ARN_B : ARN_A, entry, len, reg);
            for (int w = 0; w < MAX_WATCHERS; w++)
                if (had[w])
                    FUZZ_ASSERT(watchers[w].calls == 1 && watchers[w].final_seen);
            free(entry);
            break;
        }
        case 4: {
            model_watcher *m = &watchers[(n > 0 ? p[0] : 0) % MAX_WATCHERS];
            if (m->w) {
                pgw_watch_detach(m->w);
                m->w = NULL;
            }
            break;
        }
        case 5:
            event_base_loop(base, EVLOOP_NONBLOCK);
            break;
        }
        check_streams(reg);
    }

    for (int w = 0; w < MAX_WATCHERS; w++) {
        if (watchers[w].w)
            pgw_watch_detach(watchers[w].w);
        watchers[w].w = NULL;
        seen_clear(&watchers[w].last);
    }
    check_streams(reg);
    pgw_watch_registry_free(reg);
    /* Events of freed groups must be gone: a loop pass now would touch freed memory. */
    event_base_loop(base, EVLOOP_NONBLOCK);
    return 0;
}

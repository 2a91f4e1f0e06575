/* The caching provider's refresh logic, with an injected clock and a source the test answers
 * by hand: refresh ahead of expiry, one fetch for many waiters, failures keep the last good
 * credentials with growing backoff, nothing expired is ever handed out, invalidate. */
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "service/aws/credentials_cached.h"
#include "test_util.h"

static int64_t fake_now = 1700000000000LL;
static int64_t clock_fn(void *data)
{
    (void)data;
    return fake_now;
}

/* A source whose fetches stay pending until the test completes them. */
typedef struct fake_source {
    pgw_credentials_provider base;
    int gets;
    pgw_credentials_cb cb;
    void *user_data;
} fake_source;

static int fake_get(pgw_credentials_provider *p, pgw_credentials_cb cb, void *user_data)
{
    fake_source *f = (fake_source *)p;
    if (f->cb)
        return -1; /* one at a time, like the real sources */
    f->gets++;
    f->cb = cb;
    f->user_data = user_data;
    return 0;
}

static void fake_destroy(pgw_credentials_provider *p)
{
    free(p);
}

static const pgw_credentials_provider_vtable fake_vtable = {fake_get, NULL, fake_destroy};

static void complete(fake_source *f, pgw_credentials *creds, const char *error)
{
    pgw_credentials_cb cb = f->cb;
    f->cb = NULL;
    if (cb)
        cb(creds, error, f->user_data);
}

static pgw_credentials *make(const char *akid, int64_t lifetime_ms)
{
    return pgw_credentials_new(akid, "secret", "token", lifetime_ms ? fake_now + lifetime_ms : 0,
                               "test");
}

/* What a caller got. */
typedef struct result {
    int calls;
    char akid[32];
    char error[256];
} result;

static void on_creds(pgw_credentials *creds, const char *error, void *user_data)
{
    result *r = user_data;
    r->calls++;
    snprintf(r->akid, sizeof(r->akid), "%s", creds ? creds->access_key_id : "");
    snprintf(r->error, sizeof(r->error), "%s", error ? error : "");
    if (creds)
        CHECK(!pgw_credentials_expired(creds, fake_now, PGW_CREDENTIALS_EXPIRY_MARGIN_MS));
}

static int changes, last_change_had_creds;
static void on_change(const pgw_credentials *creds, void *data)
{
    changes++;
    last_change_had_creds = creds != NULL;
}

static pgw_credentials_provider *new_cached(struct event_base *base, fake_source **src)
{
    fake_source *f = calloc(1, sizeof(*f));
    f->base.vtable = &fake_vtable;
    *src = f;
    pgw_credentials_cached_options o = {
        .base = base,
        .source = &f->base,
        .name = "test",
        .on_change = on_change,
        .now_wall_ms = clock_fn,
    };
    changes = 0;
    return pgw_credentials_provider_cached_new(&o);
}

static void test_one_fetch_for_many_waiters_and_refresh_ahead(struct event_base *base)
{
    fake_source *f;
    pgw_credentials_provider *p = new_cached(base, &f);
    result r[10] = {{0}};
    for (int i = 0; i < 10; i++)
        CHECK(pgw_credentials_provider_get(p, on_creds, &r[i]) == 0);
    CHECK(f->gets == 1);
    CHECK(r[0].calls == 0);
    pgw_credentials_cached_stats st;
    pgw_credentials_cached_get_stats(p, &st);
    CHECK(st.waiting == 10 && st.refreshing == 1);

    pgw_credentials *a = make("AKIA_A", 3600 * 1000);
    int64_t installed = fake_now;
    complete(f, a, NULL);
    pgw_credentials_unref(a);
    for (int i = 0; i < 10; i++) {
        CHECK(r[i].calls == 1);
        CHECK_STR(r[i].akid, "AKIA_A");
    }
    CHECK(changes == 1 && last_change_had_creds);
    /* Hour-long credentials: refreshed 15 minutes ahead. */
    CHECK(pgw_credentials_cached_next_refresh_ms(p) == installed + 45 * 60 * 1000);

    fake_now = installed + 45 * 60 * 1000 - 1;
    result q = {0};
    pgw_credentials_provider_get(p, on_creds, &q);
    CHECK(q.calls == 1 && f->gets == 1);

    /* Due: the caller still gets the current credentials at once; a refresh starts. */
    fake_now = installed + 45 * 60 * 1000;
    pgw_credentials_provider_get(p, on_creds, &q);
    CHECK(q.calls == 2);
    CHECK_STR(q.akid, "AKIA_A");
    CHECK(f->gets == 2);
    pgw_credentials_provider_get(p, on_creds, &q);
    CHECK(q.calls == 3 && f->gets == 2);

    pgw_credentials *b = make("AKIA_B", 3600 * 1000);
    complete(f, b, NULL);
    pgw_credentials_unref(b);
    CHECK(changes == 2);
    pgw_credentials_provider_get(p, on_creds, &q);
    CHECK_STR(q.akid, "AKIA_B");
    pgw_credentials_provider_free(p);
}

static void test_failures_keep_good_credentials_then_lapse(struct event_base *base)
{
    fake_source *f;
    pgw_credentials_provider *p = new_cached(base, &f);
    result q = {0};
    pgw_credentials_provider_get(p, on_creds, &q);
    /* Short-lived credentials (60 s): refresh at half their life, not 15 minutes ahead. */
    pgw_credentials *a = make("AKIA_A", 60 * 1000);
    int64_t installed = fake_now, expires = a->expires_wall_ms;
    complete(f, a, NULL);
    pgw_credentials_unref(a);
    CHECK(pgw_credentials_cached_next_refresh_ms(p) == installed + 30 * 1000);

    fake_now = installed + 30 * 1000;
    pgw_credentials_cached_tick(p);
    CHECK(f->gets == 2);
    complete(f, NULL, "STS said no");
    int64_t retry1 = pgw_credentials_cached_next_refresh_ms(p) - fake_now;
    CHECK(retry1 >= 500 && retry1 <= 1000);
    pgw_credentials_provider_get(p, on_creds, &q);
    CHECK_STR(q.akid, "AKIA_A"); /* still valid: kept */

    fake_now += retry1;
    pgw_credentials_cached_tick(p);
    CHECK(f->gets == 3);
    complete(f, NULL, "STS said no again");
    int64_t retry2 = pgw_credentials_cached_next_refresh_ms(p) - fake_now;
    CHECK(retry2 >= 1000 && retry2 <= 2000);
    pgw_credentials_cached_stats st;
    pgw_credentials_cached_get_stats(p, &st);
    CHECK(st.consecutive_failures == 2 && st.failures == 2);

    /* Within the margin of expiry: dropped, and the change is announced. */
    fake_now = expires - PGW_CREDENTIALS_EXPIRY_MARGIN_MS;
    f->cb = NULL;
    pgw_credentials_cached_tick(p); /* also starts the due retry */
    CHECK(changes == 2 && !last_change_had_creds);
    CHECK(f->gets == 4);
    result w = {0};
    pgw_credentials_provider_get(p, on_creds, &w);
    CHECK(w.calls == 0); /* waits for the fetch in flight: nothing expired handed out */
    complete(f, NULL, "still failing");
    CHECK(w.calls == 1 && w.akid[0] == '\0');
    CHECK(strstr(w.error, "still failing") != NULL);

    /* Right after a failure, with nothing usable, callers fail fast: no fetch storm. */
    int gets = f->gets;
    pgw_credentials_provider_get(p, on_creds, &w);
    CHECK(w.calls == 2 && f->gets == gets);

    /* A source handing out credentials that already lapse is a failure too. */
    fake_now += 2000;
    pgw_credentials_provider_get(p, on_creds, &w);
    CHECK(f->gets == gets + 1);
    pgw_credentials *stale = make("AKIA_STALE", 5000);
    complete(f, stale, NULL);
    pgw_credentials_unref(stale);
    CHECK(w.calls == 3 && w.akid[0] == '\0');

    fake_now += 10000;
    pgw_credentials_provider_get(p, on_creds, &w);
    pgw_credentials *c = make("AKIA_C", 3600 * 1000);
    complete(f, c, NULL);
    pgw_credentials_unref(c);
    CHECK(w.calls == 4);
    CHECK_STR(w.akid, "AKIA_C");
    CHECK(last_change_had_creds);
    pgw_credentials_provider_free(p);
}

static void test_invalidate(struct event_base *base)
{
    fake_source *f;
    pgw_credentials_provider *p = new_cached(base, &f);
    result q = {0};
    pgw_credentials_provider_get(p, on_creds, &q);
    pgw_credentials *a = make("AKIA_A", 3600 * 1000);
    complete(f, a, NULL);
    pgw_credentials_unref(a);
    fake_now += 5000;

    /* AWS said ExpiredToken: callers wait for new credentials, one fetch for all. */
    result r1 = {0}, r2 = {0}, r3 = {0};
    pgw_credentials_provider_invalidate(p, NULL);
    pgw_credentials_provider_get(p, on_creds, &r1);
    pgw_credentials_provider_invalidate(p, NULL);
    pgw_credentials_provider_get(p, on_creds, &r2);
    pgw_credentials_provider_get(p, on_creds, &r3);
    CHECK(f->gets == 2);
    CHECK(r1.calls == 0 && r2.calls == 0 && r3.calls == 0);
    pgw_credentials *b = make("AKIA_B", 3600 * 1000);
    complete(f, b, NULL);
    pgw_credentials_unref(b);
    CHECK_STR(r1.akid, "AKIA_B");
    CHECK_STR(r2.akid, "AKIA_B");
    CHECK_STR(r3.akid, "AKIA_B");

    /* A forced refresh that fails falls back to the still-valid credentials. */
    pgw_credentials_provider_invalidate(p, NULL);
    pgw_credentials_provider_get(p, on_creds, &r1);
    CHECK(f->gets == 3);
    complete(f, NULL, "down");
    CHECK(r1.calls == 2);
    CHECK_STR(r1.akid, "AKIA_B");
    pgw_credentials_provider_free(p);
}

static void test_static_source_never_refreshes(struct event_base *base)
{
    pgw_credentials *k = make("AKIA_STATIC", 0);
    pgw_credentials_cached_options o = {
        .base = base,
        .source = pgw_credentials_provider_static_new(k),
        .name = "environment",
        .now_wall_ms = clock_fn,
        .eager = 1,
    };
    pgw_credentials_unref(k);
    pgw_credentials_provider *p = pgw_credentials_provider_cached_new(&o);
    CHECK(pgw_credentials_cached_next_refresh_ms(p) == fake_now); /* eager: due now */
    pgw_credentials_cached_tick(p);                               /* synchronous source */
    CHECK(pgw_credentials_cached_next_refresh_ms(p) == 0);
    result q = {0};
    fake_now += 365LL * 24 * 3600 * 1000;
    pgw_credentials_provider_get(p, on_creds, &q);
    CHECK(q.calls == 1);
    CHECK_STR(q.akid, "AKIA_STATIC");
    pgw_credentials_provider_free(p);
}

int main(void)
{
    struct event_base *base = event_base_new();
    test_one_fetch_for_many_waiters_and_refresh_ahead(base);
    test_failures_keep_good_credentials_then_lapse(base);
    test_invalidate(base);
    test_static_source_never_refreshes(base);
    event_base_free(base);
    return pgw_test_finish("test_credentials_cached");
}

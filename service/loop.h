/* The event loop that owns all outbound I/O: one libevent base driven by one thread. libcurl's
 * multi handle, the Redis connections, the HTTP server and every timer live on it. Other
 * threads (the gRPC completion-queue threads) never touch those objects: they hand work over
 * with pgw_loop_post(). */
#ifndef PGW_LOOP_H
#define PGW_LOOP_H

struct event_base;
typedef struct pgw_loop pgw_loop;

typedef void (*pgw_loop_fn)(void *arg);

/* libevent priorities on the loop's base. Events get PGW_LOOP_PRIORITY_DEFAULT unless set
 * otherwise: posted tasks, Redis replies, lookup deadlines, the HTTP server, timers. Bulk work
 * that many cache misses cause at once (upstream transfers, starting queued fetches) runs at
 * PGW_LOOP_PRIORITY_BULK: libevent runs a bulk callback only when no default-priority
 * callback is ready, and looks for new I/O after every few bulk callbacks, so a burst of
 * misses never delays the work of a cache hit by more than a few callbacks. */
#define PGW_LOOP_PRIORITY_DEFAULT 1
#define PGW_LOOP_PRIORITY_BULK    2

/* Creates the loop (not yet running). Returns NULL on failure. Free with pgw_loop_free(). */
pgw_loop *pgw_loop_new(void);

/* The libevent base, for modules that register events. Use it on the loop thread only (or
 * before pgw_loop_start). */
struct event_base *pgw_loop_base(pgw_loop *loop);

/* Runs fn(arg) on the loop thread, in order of posting. Safe from any thread. Returns 0, or
 * -1 when the loop has stopped accepting work (fn will then never run: the caller still owns
 * arg). Tasks run in batches of a bounded size, with the loop's I/O in between. */
int pgw_loop_post(pgw_loop *loop, pgw_loop_fn fn, void *arg);

/* Like pgw_loop_post, in a lane of its own that runs ahead of every pgw_loop_post task not yet
 * run: for work that is quick and that a caller waits on right now (a lookup the in-process
 * cache expects to hit), so it never queues behind a burst of cold lookups. Urgent tasks keep
 * their order among themselves. */
int pgw_loop_post_urgent(pgw_loop *loop, pgw_loop_fn fn, void *arg);

/* Starts the loop thread. Returns 0 or -1. */
int pgw_loop_start(pgw_loop *loop);

/* Runs every posted task, then stops the thread and joins it. Posts after this fail. */
void pgw_loop_stop(pgw_loop *loop);

/* Frees a stopped (or never started) loop. */
void pgw_loop_free(pgw_loop *loop);

#endif

/* Clocks in milliseconds. Monotonic time for deadlines and TTL arithmetic inside one process;
 * wall time for anything stored or shared between replicas (cache entries, signing). */
#ifndef PGW_CLOCK_H
#define PGW_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t pgw_now_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t pgw_now_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static inline int64_t pgw_now_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif

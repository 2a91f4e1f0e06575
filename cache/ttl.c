/* TTL policy; see ttl.h. */
#include "cache/ttl.h"

#include <string.h>

void pgw_ttl_config_defaults(pgw_ttl_config *cfg)
{
    cfg->terminal_ttl_ms = 3600 * 1000;
    cfg->running_ttl_ms = 10 * 1000;
    cfg->negative_ttl_ms = 5 * 1000;
    cfg->stale_window_ms = 300 * 1000;
    cfg->jitter_pct = 10;
    cfg->l1_ttl_ms = 1000;
}

int pgw_ttl_status_is_terminal(const char *status)
{
    return status && (strcmp(status, "ACTIVE") == 0 || strcmp(status, "CREATE FAILED") == 0);
}

int64_t pgw_ttl_jitter(int64_t base_ms, uint32_t pct, uint32_t random)
{
    if (base_ms <= 0)
        return base_ms;
    if (pct > 100)
        pct = 100;
    /* span <= base, and base is a TTL (far below 2^53), so nothing here overflows. */
    int64_t span = base_ms * (int64_t)pct / 100;
    /* Map random uniformly onto [0, 2*span] without modulo bias worth mentioning. */
    int64_t off = (int64_t)(((uint64_t)random * (uint64_t)(2 * span + 1)) >> 32) - span;
    int64_t v = base_ms + off;
    return v < 1 ? 1 : v;
}

int64_t pgw_ttl_for_status(const pgw_ttl_config *cfg, const char *status, uint32_t random)
{
    int64_t base = pgw_ttl_status_is_terminal(status) ? cfg->terminal_ttl_ms : cfg->running_ttl_ms;
    return pgw_ttl_jitter(base, cfg->jitter_pct, random);
}

int64_t pgw_ttl_negative(const pgw_ttl_config *cfg, uint32_t random)
{
    return pgw_ttl_jitter(cfg->negative_ttl_ms, cfg->jitter_pct, random);
}

void pgw_ttl_plan_entry(const pgw_ttl_config *cfg, const char *status, int negative, int64_t now_ms,
                        uint32_t random, pgw_ttl_plan *out)
{
    int64_t ttl =
        negative ? pgw_ttl_negative(cfg, random) : pgw_ttl_for_status(cfg, status, random);
    if (ttl < 0)
        ttl = 0;
    int64_t stale = cfg->stale_window_ms < 0 ? 0 : cfg->stale_window_ms;
    out->fetched_at_ms = now_ms;
    out->fresh_until_ms = now_ms + ttl;
    out->stale_until_ms = out->fresh_until_ms + stale;
    out->redis_ttl_ms = out->stale_until_ms - now_ms;
    if (out->redis_ttl_ms < 1)
        out->redis_ttl_ms = 1;
}

int64_t pgw_ttl_l1_ms(const pgw_ttl_config *cfg, int64_t fresh_until_ms, int64_t now_ms)
{
    int64_t left = fresh_until_ms - now_ms;
    return left < cfg->l1_ttl_ms ? left : cfg->l1_ttl_ms;
}

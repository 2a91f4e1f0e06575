#include "service/log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static atomic_int min_level = PGW_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int pgw_log_set_level_name(const char *name)
{
    for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            atomic_store(&min_level, i);
            return 0;
        }
    }
    return -1;
}

int pgw_log_enabled(pgw_log_level level)
{
    return (int)level >= atomic_load(&min_level);
}

void pgw_log_time_now(char *buf, size_t len)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

void pgw_log(pgw_log_level level, const char *msg, json_t *fields)
{
    if (!pgw_log_enabled(level)) {
        json_decref(fields);
        return;
    }
    char when[40];
    pgw_log_time_now(when, sizeof(when));

    json_t *line = json_object();
    json_object_set_new(line, "time", json_string(when));
    json_object_set_new(line, "level", json_string(level_names[level]));
    json_object_set_new(line, "msg", json_string(msg ? msg : ""));
    if (json_is_object(fields))
        json_object_update(line, fields);
    json_decref(fields);

    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(line);
    if (!text)
        return;
    flockfile(stdout);
    fputs(text, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    funlockfile(stdout);
    free(text);
}

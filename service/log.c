#include "service/log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "service/metrics.h"

static atomic_int min_level = PGW_LOG_INFO;
static atomic_int stdout_broken; /* the last write to stdout failed */

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
    if (pgw_log_write_line(stdout, text) != 0)
        pgw_metrics_log_write_failure("log");
    free(text);
}

int pgw_log_write_line(FILE *out, const char *text)
{
    flockfile(out);
    int failed = 0;
    /* After a failed write the file may end in the start of a line: begin on a fresh one, so
     * that once there is room again every line after it is whole JSON. */
    if (out == stdout && atomic_load(&stdout_broken))
        failed = fputc('\n', out) == EOF;
    if (!failed)
        failed = fputs(text, out) == EOF || fputc('\n', out) == EOF || fflush(out) == EOF;
    if (failed) {
        /* Drop what stdio still holds (the start of this line, perhaps of an earlier one):
         * retried later it would glue half a line to the next. */
        __fpurge(out);
        clearerr(out);
    }
    int was_broken = out == stdout ? atomic_exchange(&stdout_broken, failed) : 0;
    funlockfile(out);
    /* Once per episode, where an operator may still see it: stdout itself is what fails. */
    if (out == stdout && failed && !was_broken)
        fprintf(stderr,
                "{\"level\":\"error\",\"msg\":\"cannot write to stdout: log and audit "
                "lines are dropped until it works again (pgw_log_write_failures_total)\"}\n");
    return failed ? -1 : 0;
}

/* job_json: the three JSON faces of a batch inference job. See job_json.h.
 *
 * Allocation: every part of a parsed job (messages, strings, map arrays) comes from malloc and
 * is initialised with the generated __init(), exactly as protobuf-c's own unpack with the
 * default allocator lays it out, so protobuf_c_message_free_unpacked(&job->base, NULL) frees a
 * complete or a half-built job alike. Unset strings keep pointing at protobuf_c_empty_string,
 * which the free routine knows to skip. */
#include "service/aws/job_json.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define JOB "batchInferenceJob"

/* Timestamp's valid range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z. Upstream times must
 * also be >= 0 (AWS never sends earlier ones; a negative one is corrupt). */
#define TS_MIN_SECONDS INT64_C(-62135596800)
#define TS_MAX_SECONDS INT64_C(253402300799)

typedef PersonalizeGateway__V1__BatchInferenceJob Job;
typedef PersonalizeGateway__V1__S3DataConfig S3Config;
typedef PersonalizeGateway__V1__BatchInferenceJobConfig JobConfig;
typedef PersonalizeGateway__V1__BatchInferenceJobConfig__ItemExplorationConfigEntry ExplEntry;
typedef PersonalizeGateway__V1__BatchInferenceJobConfig__RankingInfluenceEntry RankEntry;
typedef Google__Protobuf__Timestamp Timestamp;

/* ---- parsing ------------------------------------------------------------------------------ */

/* Where a parse error goes. */
typedef struct perr {
    char *buf;
    size_t len;
} perr;

/* Formats the error, then replaces anything non-printable (jansson quotes input bytes in its
 * own messages) so that the text is safe in logs and status messages. Returns -1. */
static int fail(perr *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(perr *e, const char *fmt, ...)
{
    if (e->buf == NULL || e->len == 0)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->buf, e->len, fmt, ap);
    va_end(ap);
    for (char *p = e->buf; *p; p++) {
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';
    }
    return -1;
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    }
    return "unknown";
}

static int wrong_type(perr *e, const char *path, const char *key, const json_t *v,
                      const char *expected)
{
    return fail(e, "upstream returned %s.%s of type %s, expected %s", path, key, type_name(v),
                expected);
}

/* The member `key` of obj, or NULL if it is absent or JSON null (both mean "not set"). */
static json_t *member(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

static char *dup_json_string(const json_t *v)
{
    size_t n = json_string_length(v);
    char *s = malloc(n + 1);
    if (s != NULL) {
        memcpy(s, json_string_value(v), n);
        s[n] = '\0';
    }
    return s;
}

/* Sets *dst to a copy of the string member `key`, leaving it untouched if absent. */
static int get_string(perr *e, json_t *obj, const char *path, const char *key, char **dst)
{
    json_t *v = member(obj, key);
    if (v == NULL)
        return 0;
    if (!json_is_string(v))
        return wrong_type(e, path, key, v, "string");
    char *s = dup_json_string(v);
    if (s == NULL)
        return fail(e, "out of memory parsing %s.%s", path, key);
    *dst = s;
    return 0;
}

/* Sets *dst to the object member `key`, or NULL if absent. */
static int get_object(perr *e, json_t *obj, const char *path, const char *key, json_t **dst)
{
    json_t *v = member(obj, key);
    *dst = NULL;
    if (v == NULL)
        return 0;
    if (!json_is_object(v))
        return wrong_type(e, path, key, v, "object");
    *dst = v;
    return 0;
}

static int get_int32(perr *e, json_t *obj, const char *path, const char *key, int32_t *dst)
{
    json_t *v = member(obj, key);
    if (v == NULL)
        return 0;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < INT32_MIN || i > INT32_MAX)
            return fail(e,
                        "upstream returned %s.%s %" JSON_INTEGER_FORMAT
                        ", which is out of range for int32",
                        path, key, i);
        *dst = (int32_t)i;
        return 0;
    }
    if (json_is_real(v)) {
        /* JSON has one number type; 5.0 is still the integer 5. */
        double d = json_real_value(v);
        if (d != floor(d))
            return fail(e, "upstream returned %s.%s %g, expected an integer", path, key, d);
        if (d < INT32_MIN || d > INT32_MAX)
            return fail(e, "upstream returned %s.%s %g, which is out of range for int32", path, key,
                        d);
        *dst = (int32_t)d;
        return 0;
    }
    return wrong_type(e, path, key, v, "integer");
}

/* Epoch seconds (integer or fractional) to a Timestamp, rounded to the microsecond: a double
 * near 1.7e9 holds about 0.2 us of precision, so finer digits would be noise, and AWS itself
 * sends milliseconds. */
static int get_timestamp(perr *e, json_t *obj, const char *path, const char *key, Timestamp **dst)
{
    json_t *v = member(obj, key);
    if (v == NULL)
        return 0;
    int64_t secs;
    int32_t nanos = 0;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0 || i > TS_MAX_SECONDS)
            return fail(e,
                        "upstream returned %s.%s %" JSON_INTEGER_FORMAT
                        ", which is not a valid timestamp",
                        path, key, i);
        secs = i;
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!isfinite(d) || d < 0 || d >= (double)TS_MAX_SECONDS + 1)
            return fail(e, "upstream returned %s.%s %g, which is not a valid timestamp", path, key,
                        d);
        double whole = floor(d);
        long long micros = llround((d - whole) * 1e6);
        secs = (int64_t)whole;
        if (micros >= 1000000) {
            secs++;
            micros -= 1000000;
        }
        if (secs > TS_MAX_SECONDS)
            return fail(e, "upstream returned %s.%s %g, which is not a valid timestamp", path, key,
                        d);
        nanos = (int32_t)(micros * 1000);
    } else {
        return wrong_type(e, path, key, v, "number");
    }
    Timestamp *ts = malloc(sizeof(*ts));
    if (ts == NULL)
        return fail(e, "out of memory parsing %s.%s", path, key);
    google__protobuf__timestamp__init(ts);
    ts->seconds = secs;
    ts->nanos = nanos;
    *dst = ts;
    return 0;
}

/* Parses an S3DataConfig object member into a new message at *dst (left NULL if absent). */
static int get_s3(perr *e, json_t *obj, const char *path, const char *key, S3Config **dst)
{
    json_t *o;
    if (get_object(e, obj, path, key, &o) != 0)
        return -1;
    if (o == NULL)
        return 0;
    S3Config *s3 = malloc(sizeof(*s3));
    if (s3 == NULL)
        return fail(e, "out of memory parsing %s.%s", path, key);
    personalize_gateway__v1__s3_data_config__init(s3);
    *dst = s3; /* owned by the parent from here on, so a failure below frees it */
    char sub[128];
    snprintf(sub, sizeof(sub), "%s.%s", path, key);
    if (get_string(e, o, sub, "path", &s3->path) != 0)
        return -1;
    return get_string(e, o, sub, "kmsKeyArn", &s3->kms_key_arn);
}

/* A map key quoted for an error message (keys come from upstream: keep them short). */
static const char *key_for_msg(const char *k, char *buf, size_t len)
{
    snprintf(buf, len, "%.40s%s", k, strlen(k) > 40 ? "..." : "");
    return buf;
}

static int get_item_exploration(perr *e, json_t *cfg, const char *path, JobConfig *c)
{
    json_t *m;
    if (get_object(e, cfg, path, "itemExplorationConfig", &m) != 0)
        return -1;
    size_t n = m ? json_object_size(m) : 0;
    if (n == 0)
        return 0;
    c->item_exploration_config = calloc(n, sizeof(*c->item_exploration_config));
    if (c->item_exploration_config == NULL)
        return fail(e, "out of memory parsing %s.itemExplorationConfig", path);
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v)
    {
        if (!json_is_string(v)) {
            char kb[48];
            return fail(e,
                        "upstream returned %s.itemExplorationConfig[\"%s\"] of type %s, expected "
                        "string",
                        path, key_for_msg(k, kb, sizeof(kb)), type_name(v));
        }
        ExplEntry *ent = malloc(sizeof(*ent));
        if (ent == NULL)
            return fail(e, "out of memory parsing %s.itemExplorationConfig", path);
        personalize_gateway__v1__batch_inference_job_config__item_exploration_config_entry__init(
            ent);
        c->item_exploration_config[c->n_item_exploration_config++] = ent;
        ent->key = strdup(k);
        ent->value = dup_json_string(v);
        if (ent->key == NULL || ent->value == NULL)
            return fail(e, "out of memory parsing %s.itemExplorationConfig", path);
    }
    return 0;
}

static int get_ranking_influence(perr *e, json_t *cfg, const char *path, JobConfig *c)
{
    json_t *m;
    if (get_object(e, cfg, path, "rankingInfluence", &m) != 0)
        return -1;
    size_t n = m ? json_object_size(m) : 0;
    if (n == 0)
        return 0;
    c->ranking_influence = calloc(n, sizeof(*c->ranking_influence));
    if (c->ranking_influence == NULL)
        return fail(e, "out of memory parsing %s.rankingInfluence", path);
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v)
    {
        if (!json_is_number(v)) {
            char kb[48];
            return fail(e,
                        "upstream returned %s.rankingInfluence[\"%s\"] of type %s, expected "
                        "number",
                        path, key_for_msg(k, kb, sizeof(kb)), type_name(v));
        }
        RankEntry *ent = malloc(sizeof(*ent));
        if (ent == NULL)
            return fail(e, "out of memory parsing %s.rankingInfluence", path);
        personalize_gateway__v1__batch_inference_job_config__ranking_influence_entry__init(ent);
        c->ranking_influence[c->n_ranking_influence++] = ent;
        ent->key = strdup(k);
        ent->value = json_number_value(v);
        if (ent->key == NULL)
            return fail(e, "out of memory parsing %s.rankingInfluence", path);
    }
    return 0;
}

static int get_mode(perr *e, json_t *obj, const char *path, const char *key,
                    PersonalizeGateway__V1__BatchInferenceJobMode *dst)
{
    json_t *v = member(obj, key);
    if (v == NULL)
        return 0;
    if (!json_is_string(v))
        return wrong_type(e, path, key, v, "string");
    const char *s = json_string_value(v);
    if (strcmp(s, "BATCH_INFERENCE") == 0)
        *dst =
            PERSONALIZE_GATEWAY__V1__BATCH_INFERENCE_JOB_MODE__BATCH_INFERENCE_JOB_MODE_BATCH_INFERENCE;
    else if (strcmp(s, "THEME_GENERATION") == 0)
        *dst =
            PERSONALIZE_GATEWAY__V1__BATCH_INFERENCE_JOB_MODE__BATCH_INFERENCE_JOB_MODE_THEME_GENERATION;
    else /* a mode AWS added later: keep the rest of the job */
        *dst =
            PERSONALIZE_GATEWAY__V1__BATCH_INFERENCE_JOB_MODE__BATCH_INFERENCE_JOB_MODE_UNSPECIFIED;
    return 0;
}

static int parse_job(perr *e, json_t *o, Job *j)
{
    json_t *sub, *sub2;

    if (get_string(e, o, JOB, "jobName", &j->job_name) != 0 ||
        get_string(e, o, JOB, "batchInferenceJobArn", &j->batch_inference_job_arn) != 0 ||
        get_string(e, o, JOB, "filterArn", &j->filter_arn) != 0 ||
        get_string(e, o, JOB, "failureReason", &j->failure_reason) != 0 ||
        get_string(e, o, JOB, "solutionVersionArn", &j->solution_version_arn) != 0 ||
        get_int32(e, o, JOB, "numResults", &j->num_results) != 0 ||
        get_string(e, o, JOB, "roleArn", &j->role_arn) != 0 ||
        get_mode(e, o, JOB, "batchInferenceJobMode", &j->batch_inference_job_mode) != 0 ||
        get_string(e, o, JOB, "status", &j->status) != 0 ||
        get_timestamp(e, o, JOB, "creationDateTime", &j->creation_date_time) != 0 ||
        get_timestamp(e, o, JOB, "lastUpdatedDateTime", &j->last_updated_date_time) != 0)
        return -1;

    if (get_object(e, o, JOB, "jobInput", &sub) != 0)
        return -1;
    if (sub != NULL) {
        j->job_input = malloc(sizeof(*j->job_input));
        if (j->job_input == NULL)
            return fail(e, "out of memory");
        personalize_gateway__v1__batch_inference_job_input__init(j->job_input);
        if (get_s3(e, sub, JOB ".jobInput", "s3DataSource", &j->job_input->s3_data_source) != 0)
            return -1;
    }

    if (get_object(e, o, JOB, "jobOutput", &sub) != 0)
        return -1;
    if (sub != NULL) {
        j->job_output = malloc(sizeof(*j->job_output));
        if (j->job_output == NULL)
            return fail(e, "out of memory");
        personalize_gateway__v1__batch_inference_job_output__init(j->job_output);
        if (get_s3(e, sub, JOB ".jobOutput", "s3DataDestination",
                   &j->job_output->s3_data_destination) != 0)
            return -1;
    }

    if (get_object(e, o, JOB, "batchInferenceJobConfig", &sub) != 0)
        return -1;
    if (sub != NULL) {
        j->batch_inference_job_config = malloc(sizeof(*j->batch_inference_job_config));
        if (j->batch_inference_job_config == NULL)
            return fail(e, "out of memory");
        personalize_gateway__v1__batch_inference_job_config__init(j->batch_inference_job_config);
        const char *p = JOB ".batchInferenceJobConfig";
        if (get_item_exploration(e, sub, p, j->batch_inference_job_config) != 0 ||
            get_ranking_influence(e, sub, p, j->batch_inference_job_config) != 0)
            return -1;
    }

    if (get_object(e, o, JOB, "themeGenerationConfig", &sub) != 0)
        return -1;
    if (sub != NULL) {
        PersonalizeGateway__V1__ThemeGenerationConfig *t = malloc(sizeof(*t));
        if (t == NULL)
            return fail(e, "out of memory");
        personalize_gateway__v1__theme_generation_config__init(t);
        j->theme_generation_config = t;
        const char *p = JOB ".themeGenerationConfig";
        if (get_object(e, sub, p, "fieldsForThemeGeneration", &sub2) != 0)
            return -1;
        if (sub2 != NULL) {
            t->fields_for_theme_generation = malloc(sizeof(*t->fields_for_theme_generation));
            if (t->fields_for_theme_generation == NULL)
                return fail(e, "out of memory");
            personalize_gateway__v1__fields_for_theme_generation__init(
                t->fields_for_theme_generation);
            if (get_string(e, sub2, JOB ".themeGenerationConfig.fieldsForThemeGeneration",
                           "itemName", &t->fields_for_theme_generation->item_name) != 0)
                return -1;
        }
    }
    return 0;
}

int pgw_job_from_aws_json(const char *body, size_t len, Job **out, char *err, size_t err_len)
{
    perr e = {err, err_len};
    json_t *root = NULL;
    Job *job = NULL;
    int rc = -1;

    if (err != NULL && err_len > 0)
        err[0] = '\0';
    if (out == NULL)
        return fail(&e, "internal error: no output for the parsed job");
    *out = NULL;
    if (body == NULL || len == 0) {
        fail(&e, "upstream returned an empty body");
        goto done;
    }
    if (len > PGW_JOB_JSON_MAX_BYTES) {
        fail(&e, "upstream returned a body of %zu bytes, more than the %d allowed", len,
             PGW_JOB_JSON_MAX_BYTES);
        goto done;
    }
    json_error_t jerr;
    root = json_loadb(body, len, 0, &jerr);
    if (root == NULL) {
        fail(&e, "upstream returned invalid JSON (line %d, column %d: %s)", jerr.line, jerr.column,
             jerr.text);
        goto done;
    }
    if (!json_is_object(root)) {
        fail(&e, "upstream returned a JSON %s, expected an object", type_name(root));
        goto done;
    }
    json_t *o = json_object_get(root, JOB);
    if (o == NULL || json_is_null(o)) {
        fail(&e, "upstream response has no " JOB " object");
        goto done;
    }
    if (!json_is_object(o)) {
        fail(&e, "upstream returned " JOB " of type %s, expected object", type_name(o));
        goto done;
    }
    job = malloc(sizeof(*job));
    if (job == NULL) {
        fail(&e, "out of memory");
        goto done;
    }
    personalize_gateway__v1__batch_inference_job__init(job);
    if (parse_job(&e, o, job) != 0)
        goto done;
    *out = job;
    job = NULL;
    rc = 0;
done:
    pgw_job_free(job);
    json_decref(root);
    return rc;
}

void pgw_job_free(Job *job)
{
    if (job != NULL)
        protobuf_c_message_free_unpacked(&job->base, NULL);
}

/* ---- rendering ---------------------------------------------------------------------------- */

/* Adds a string member if the string is set, non-empty and valid UTF-8 (json_string refuses
 * anything else, and an absent field is better than an unparseable answer). */
static void put_str(json_t *obj, const char *key, const char *s)
{
    if (s != NULL && s[0] != '\0')
        json_object_set_new(obj, key, json_string(s));
}

static int real_roundtrips(double v, int prec)
{
    char buf[64];
    snprintf(buf, sizeof(buf), "%.*g", prec, v);
    return strtod(buf, NULL) == v;
}

static int tree_roundtrips(json_t *v, int prec)
{
    const char *k;
    json_t *m;
    size_t i;
    switch (json_typeof(v)) {
    case JSON_REAL:
        return real_roundtrips(json_real_value(v), prec);
    case JSON_OBJECT:
        json_object_foreach(v, k, m)
        {
            if (!tree_roundtrips(m, prec))
                return 0;
        }
        return 1;
    case JSON_ARRAY:
        json_array_foreach(v, i, m)
        {
            if (!tree_roundtrips(m, prec))
                return 0;
        }
        return 1;
    default:
        return 1;
    }
}

/* Serialises compactly with the fewest significant digits (at least min_prec) that still read
 * back as exactly the same doubles: jansson's default of 17 digits prints 1700000000.123 as
 * 1700000000.1229999 and 0.3 as 0.29999999999999999, correct but not what AWS sends. */
static char *dump(json_t *root, int min_prec)
{
    int prec = min_prec < 1 ? 1 : min_prec;
    while (prec < 17 && !tree_roundtrips(root, prec))
        prec++;
    return json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(prec));
}

static int ts_valid(const Timestamp *ts)
{
    return ts->seconds >= TS_MIN_SECONDS && ts->seconds <= TS_MAX_SECONDS && ts->nanos >= 0 &&
           ts->nanos <= 999999999;
}

/* Adds an epoch-seconds timestamp member; raises *min_prec so that it prints positionally
 * ("1700000000.0", not "1.7e9"). */
static void put_epoch(json_t *obj, const char *key, const Timestamp *ts, int *min_prec)
{
    if (ts == NULL || !ts_valid(ts))
        return;
    /* The double nearest to the decimal seconds.nanos, so it prints as that decimal. */
    char buf[48];
    snprintf(buf, sizeof(buf), "%" PRId64 ".%09" PRId32, ts->seconds, ts->nanos);
    double d = strtod(buf, NULL);
    int digits = 1;
    for (int64_t s = ts->seconds < 0 ? -ts->seconds : ts->seconds; s >= 10; s /= 10)
        digits++;
    if (digits > *min_prec)
        *min_prec = digits;
    json_object_set_new(obj, key, json_real(d));
}

static json_t *s3_json(const S3Config *s3)
{
    json_t *o = json_object();
    if (o != NULL && s3 != NULL) {
        put_str(o, "path", s3->path);
        put_str(o, "kmsKeyArn", s3->kms_key_arn);
    }
    return o;
}

static json_t *wrap(const char *key, json_t *inner)
{
    json_t *o = json_object();
    if (o != NULL && inner != NULL)
        json_object_set_new(o, key, inner);
    else
        json_decref(inner);
    return o;
}

/* The maps, shared by both renderings. Non-finite doubles: AWS JSON cannot carry them, so
 * they are dropped there; proto3 JSON spells them "NaN", "Infinity", "-Infinity". */
static json_t *config_json(const JobConfig *c, int proto3)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    if (c->n_item_exploration_config > 0) {
        json_t *m = json_object();
        for (size_t i = 0; m != NULL && i < c->n_item_exploration_config; i++) {
            const ExplEntry *ent = c->item_exploration_config[i];
            if (ent != NULL && ent->key != NULL && ent->value != NULL)
                json_object_set_new(m, ent->key, json_string(ent->value));
        }
        json_object_set_new(o, "itemExplorationConfig", m);
    }
    if (c->n_ranking_influence > 0) {
        json_t *m = json_object();
        for (size_t i = 0; m != NULL && i < c->n_ranking_influence; i++) {
            const RankEntry *ent = c->ranking_influence[i];
            if (ent == NULL || ent->key == NULL)
                continue;
            double v = ent->value;
            json_t *jv;
            if (isfinite(v))
                jv = json_real(v);
            else if (!proto3)
                continue;
            else
                jv = json_string(isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
            json_object_set_new(m, ent->key, jv);
        }
        json_object_set_new(o, "rankingInfluence", m);
    }
    return o;
}

static json_t *theme_json(const PersonalizeGateway__V1__ThemeGenerationConfig *t)
{
    json_t *o = json_object();
    if (o != NULL && t->fields_for_theme_generation != NULL) {
        json_t *f = json_object();
        if (f != NULL)
            put_str(f, "itemName", t->fields_for_theme_generation->item_name);
        json_object_set_new(o, "fieldsForThemeGeneration", f);
    }
    return o;
}

/* RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits, as proto3 JSON writes a Timestamp. */
static void put_rfc3339(json_t *obj, const char *key, const Timestamp *ts)
{
    if (ts == NULL || !ts_valid(ts))
        return;
    time_t t = (time_t)ts->seconds;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL)
        return;
    char frac[16] = "";
    if (ts->nanos == 0)
        frac[0] = '\0';
    else if (ts->nanos % 1000000 == 0)
        snprintf(frac, sizeof(frac), ".%03" PRId32, ts->nanos / 1000000);
    else if (ts->nanos % 1000 == 0)
        snprintf(frac, sizeof(frac), ".%06" PRId32, ts->nanos / 1000);
    else
        snprintf(frac, sizeof(frac), ".%09" PRId32, ts->nanos);
    char buf[64];
    snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d%sZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
    json_object_set_new(obj, key, json_string(buf));
}

/* The members both renderings share, in the AWS model's order. */
static void put_common(json_t *o, const Job *j, int proto3)
{
    put_str(o, "jobName", j->job_name);
    put_str(o, "batchInferenceJobArn", j->batch_inference_job_arn);
    put_str(o, "filterArn", j->filter_arn);
    put_str(o, "failureReason", j->failure_reason);
    put_str(o, "solutionVersionArn", j->solution_version_arn);
    if (j->num_results != 0)
        json_object_set_new(o, "numResults", json_integer(j->num_results));
    if (j->job_input != NULL)
        json_object_set_new(o, "jobInput",
                            j->job_input->s3_data_source
                                ? wrap("s3DataSource", s3_json(j->job_input->s3_data_source))
                                : json_object());
    if (j->job_output != NULL)
        json_object_set_new(
            o, "jobOutput",
            j->job_output->s3_data_destination
                ? wrap("s3DataDestination", s3_json(j->job_output->s3_data_destination))
                : json_object());
    if (j->batch_inference_job_config != NULL)
        json_object_set_new(o, "batchInferenceJobConfig",
                            config_json(j->batch_inference_job_config, proto3));
    put_str(o, "roleArn", j->role_arn);
}

static const char *aws_mode_name(PersonalizeGateway__V1__BatchInferenceJobMode m)
{
    switch (m) {
    case PERSONALIZE_GATEWAY__V1__BATCH_INFERENCE_JOB_MODE__BATCH_INFERENCE_JOB_MODE_BATCH_INFERENCE:
        return "BATCH_INFERENCE";
    case PERSONALIZE_GATEWAY__V1__BATCH_INFERENCE_JOB_MODE__BATCH_INFERENCE_JOB_MODE_THEME_GENERATION:
        return "THEME_GENERATION";
    default:
        return NULL;
    }
}

char *pgw_job_to_aws_json(const Job *j)
{
    json_t *root = json_object();
    if (root == NULL)
        return NULL;
    int min_prec = 1;
    if (j != NULL) {
        json_t *o = json_object();
        put_common(o, j, 0);
        const char *mode = aws_mode_name(j->batch_inference_job_mode);
        if (mode != NULL)
            json_object_set_new(o, "batchInferenceJobMode", json_string(mode));
        if (j->theme_generation_config != NULL)
            json_object_set_new(o, "themeGenerationConfig", theme_json(j->theme_generation_config));
        put_str(o, "status", j->status);
        put_epoch(o, "creationDateTime", j->creation_date_time, &min_prec);
        put_epoch(o, "lastUpdatedDateTime", j->last_updated_date_time, &min_prec);
        json_object_set_new(root, JOB, o);
    }
    char *s = dump(root, min_prec);
    json_decref(root);
    return s;
}

char *pgw_job_to_proto3_json(const Job *j)
{
    json_t *root = json_object();
    if (root == NULL)
        return NULL;
    if (j != NULL) {
        json_t *o = json_object();
        put_common(o, j, 1);
        if (j->batch_inference_job_mode != 0) {
            /* Proto3 JSON writes an enum by name, or by number if this build does not know
             * it. */
            const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(
                &personalize_gateway__v1__batch_inference_job_mode__descriptor,
                (int)j->batch_inference_job_mode);
            json_object_set_new(o, "batchInferenceJobMode",
                                ev ? json_string(ev->name)
                                   : json_integer((json_int_t)j->batch_inference_job_mode));
        }
        if (j->theme_generation_config != NULL)
            json_object_set_new(o, "themeGenerationConfig", theme_json(j->theme_generation_config));
        put_str(o, "status", j->status);
        put_rfc3339(o, "creationDateTime", j->creation_date_time);
        put_rfc3339(o, "lastUpdatedDateTime", j->last_updated_date_time);
        json_object_set_new(root, JOB, o);
    }
    char *s = dump(root, 1);
    json_decref(root);
    return s;
}

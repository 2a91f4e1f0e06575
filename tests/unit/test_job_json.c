/* Unit tests for service/aws/job_json: AWS body -> protobuf -> AWS body round trips (checked by
 * packed bytes), the minimal job, unknown fields and enum values, wrong JSON types, timestamp
 * conversion, and the proto3 JSON rendering. Where Debian's python3 is available (PGW_PYTHON)
 * the renderings are also checked by the real consumers: botocore's JSON parser must read our
 * AWS body exactly as it reads the fixture, and google.protobuf.json_format must read our proto3
 * JSON as the very message we packed. */
#include "service/aws/job_json.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

typedef PersonalizeGateway__V1__BatchInferenceJob Job;

#define MODE_BATCH                                                                                 \
    PERSONALIZE_GATEWAY__V1__BATCH_INFERENCE_JOB_MODE__BATCH_INFERENCE_JOB_MODE_BATCH_INFERENCE
#define MODE_THEME                                                                                 \
    PERSONALIZE_GATEWAY__V1__BATCH_INFERENCE_JOB_MODE__BATCH_INFERENCE_JOB_MODE_THEME_GENERATION
#define MODE_UNSPECIFIED                                                                           \
    PERSONALIZE_GATEWAY__V1__BATCH_INFERENCE_JOB_MODE__BATCH_INFERENCE_JOB_MODE_UNSPECIFIED

static char test_dir[1024];

/* tests/ from the environment ctest sets, else from this file's own path. */
static void find_test_dir(void)
{
    const char *env = getenv("PGW_TEST_DIR");
    if (env != NULL && env[0] != '\0') {
        snprintf(test_dir, sizeof(test_dir), "%s", env);
        return;
    }
    snprintf(test_dir, sizeof(test_dir), "%s", __FILE__);
    char *p = strstr(test_dir, "/unit/test_job_json.c");
    if (p != NULL)
        *p = '\0';
    else
        snprintf(test_dir, sizeof(test_dir), "tests");
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (buf != NULL)
        buf[n] = '\0';
    *len = n;
    return buf;
}

static char *read_fixture(const char *name, size_t *len)
{
    char path[1200];
    snprintf(path, sizeof(path), "%s/fixtures/%s", test_dir, name);
    char *s = read_file(path, len);
    if (s == NULL)
        fprintf(stderr, "cannot read %s\n", path);
    return s;
}

static int write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    size_t n = fwrite(data, 1, len, f);
    return (fclose(f) == 0 && n == len) ? 0 : -1;
}

static Job *parse_ok(const char *body)
{
    Job *j = NULL;
    char err[256] = "";
    int rc = pgw_job_from_aws_json(body, strlen(body), &j, err, sizeof(err));
    CHECK(rc == 0);
    CHECK(rc != 0 || j != NULL);
    if (rc != 0)
        fprintf(stderr, "  parse failed: %s\n  body: %.200s\n", err, body);
    return j;
}

static uint8_t *pack(const Job *j, size_t *len)
{
    *len = personalize_gateway__v1__batch_inference_job__get_packed_size(j);
    uint8_t *buf = malloc(*len ? *len : 1);
    personalize_gateway__v1__batch_inference_job__pack(j, buf);
    return buf;
}

static int printable(const char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
            return 0;
    }
    return 1;
}

static int contains(const char *hay, const char *needle)
{
    int ok = hay != NULL && strstr(hay, needle) != NULL;
    if (!ok)
        fprintf(stderr, "  \"%s\"\n  does not contain \"%s\"\n", hay ? hay : "(null)", needle);
    return ok;
}

/* ---- the full fixture --------------------------------------------------------------------- */

static void check_full_fields(const Job *j)
{
    CHECK_STR(j->job_name, "nightly-recs-2023-11-14");
    CHECK_STR(j->batch_inference_job_arn, "arn:aws:personalize:us-east-1:123456789012:"
                                          "batch-inference-job/nightly-recs-2023-11-14");
    CHECK_STR(j->filter_arn, "arn:aws:personalize:us-east-1:123456789012:filter/exclude-purchased");
    CHECK(strncmp(j->failure_reason, "Input file s3://", 16) == 0);
    CHECK_STR(j->solution_version_arn,
              "arn:aws:personalize:us-east-1:123456789012:solution/user-personalization/0a1b2c3d");
    CHECK(j->num_results == 25);
    CHECK(j->job_input && j->job_input->s3_data_source);
    if (j->job_input && j->job_input->s3_data_source) {
        CHECK_STR(j->job_input->s3_data_source->path,
                  "s3://example-personalize-input/batch/users.json");
        CHECK(strncmp(j->job_input->s3_data_source->kms_key_arn, "arn:aws:kms:", 12) == 0);
    }
    CHECK(j->job_output && j->job_output->s3_data_destination);
    if (j->job_output && j->job_output->s3_data_destination)
        CHECK_STR(j->job_output->s3_data_destination->path,
                  "s3://example-personalize-output/batch/2023-11-14/");
    const PersonalizeGateway__V1__BatchInferenceJobConfig *c = j->batch_inference_job_config;
    CHECK(c != NULL);
    if (c != NULL) {
        CHECK(c->n_item_exploration_config == 2);
        if (c->n_item_exploration_config == 2) {
            CHECK_STR(c->item_exploration_config[0]->key, "explorationWeight");
            CHECK_STR(c->item_exploration_config[0]->value, "0.3");
            CHECK_STR(c->item_exploration_config[1]->key, "explorationItemAgeCutOff");
            CHECK_STR(c->item_exploration_config[1]->value, "30");
        }
        CHECK(c->n_ranking_influence == 2);
        if (c->n_ranking_influence == 2) {
            CHECK_STR(c->ranking_influence[0]->key, "POPULARITY");
            CHECK(c->ranking_influence[0]->value == 0.25);
            CHECK_STR(c->ranking_influence[1]->key, "FRESHNESS");
            CHECK(c->ranking_influence[1]->value == 0.7);
        }
    }
    CHECK_STR(j->role_arn,
              "arn:aws:iam::123456789012:role/service-role/PersonalizeBatchInferenceRole");
    CHECK(j->batch_inference_job_mode == MODE_THEME);
    CHECK(j->theme_generation_config && j->theme_generation_config->fields_for_theme_generation);
    if (j->theme_generation_config && j->theme_generation_config->fields_for_theme_generation)
        CHECK_STR(j->theme_generation_config->fields_for_theme_generation->item_name, "TITLE");
    CHECK_STR(j->status, "CREATE FAILED");
    CHECK(j->creation_date_time && j->creation_date_time->seconds == 1700000000 &&
          j->creation_date_time->nanos == 123000000);
    CHECK(j->last_updated_date_time && j->last_updated_date_time->seconds == 1700003600 &&
          j->last_updated_date_time->nanos == 456000000);
}

/* Runs the Python cross-checks; returns 1 if they passed, 0 if they failed, -1 if skipped. */
static int python_check(const char *dir, const char *fixture)
{
    const char *py = getenv("PGW_PYTHON");
    if (py == NULL || access(py, X_OK) != 0 || access("/usr/bin/protoc", X_OK) != 0)
        return -1;
    static const char script[] =
        "import json, subprocess, sys\n"
        "d, fixture, protodir = sys.argv[1:4]\n"
        "try:\n"
        "    import botocore.session, botocore.parsers\n"
        "    from google.protobuf import descriptor_pb2, descriptor_pool, json_format, "
        "message_factory\n"
        "except ImportError as e:\n"
        "    print('skip:', e); sys.exit(77)\n"
        "op = botocore.session.get_session().get_service_model('personalize')"
        ".operation_model('DescribeBatchInferenceJob')\n"
        "p = botocore.parsers.create_parser('json')\n"
        "def boto(b):\n"
        "    return p.parse({'status_code': 200, 'headers': {}, 'body': b}, op.output_shape)\n"
        "want = boto(open(fixture, 'rb').read())\n"
        "got = boto(open(d + '/aws.json', 'rb').read())\n"
        "assert want == got, (want, got)\n"
        "assert isinstance(got['batchInferenceJob']['creationDateTime'].microsecond, int)\n"
        "assert got['batchInferenceJob']['creationDateTime'].microsecond == 123000, got\n"
        "subprocess.check_call(['/usr/bin/protoc', '-I', protodir, '-I', '/usr/include',\n"
        "    '--include_imports', '--descriptor_set_out=' + d + '/fds.pb',\n"
        "    'personalize_gateway/v1/personalize_gateway.proto'])\n"
        "fds = descriptor_pb2.FileDescriptorSet.FromString(open(d + '/fds.pb', 'rb').read())\n"
        "pool = descriptor_pool.DescriptorPool()\n"
        "for f in fds.file: pool.Add(f)\n"
        "desc = pool.FindMessageTypeByName("
        "'personalize_gateway.v1.DescribeBatchInferenceJobResponse')\n"
        "cls = (message_factory.GetMessageClass(desc) if hasattr(message_factory, "
        "'GetMessageClass')\n"
        "       else message_factory.MessageFactory(pool).GetPrototype(desc))\n"
        "ours = open(d + '/proto3.json').read()\n"
        "m1 = json_format.Parse(ours, cls())\n"
        "m2 = cls(); m2.batch_inference_job.ParseFromString(open(d + '/job.pb', 'rb').read())\n"
        "assert m1 == m2, (m1, m2)\n"
        "assert json.loads(ours) == json_format.MessageToDict(m2), "
        "(ours, json_format.MessageToDict(m2))\n"
        "print('python cross-check ok')\n";
    char script_path[1200], cmd[4096];
    snprintf(script_path, sizeof(script_path), "%s/check.py", dir);
    if (write_file(script_path, script, sizeof(script) - 1) != 0)
        return 0;
    snprintf(cmd, sizeof(cmd), "'%s' '%s' '%s' '%s' '%s/../proto'", py, script_path, dir, fixture,
             test_dir);
    int rc = system(cmd);
    if (WIFEXITED(rc) && WEXITSTATUS(rc) == 77)
        return -1;
    return WIFEXITED(rc) && WEXITSTATUS(rc) == 0;
}

static void test_full_round_trip(void)
{
    size_t len;
    char *body = read_fixture("job_full.json", &len);
    CHECK(body != NULL);
    if (body == NULL)
        return;
    Job *j = NULL;
    char err[256] = "";
    CHECK(pgw_job_from_aws_json(body, len, &j, err, sizeof(err)) == 0);
    if (j == NULL) {
        fprintf(stderr, "  %s\n", err);
        free(body);
        return;
    }
    check_full_fields(j);

    /* proto -> pack -> unpack -> AWS JSON -> proto -> pack: the same bytes. */
    size_t n1, n2;
    uint8_t *b1 = pack(j, &n1);
    Job *u = personalize_gateway__v1__batch_inference_job__unpack(NULL, n1, b1);
    CHECK(u != NULL);
    char *aws = pgw_job_to_aws_json(u);
    CHECK(aws != NULL);
    Job *j2 = aws ? parse_ok(aws) : NULL;
    if (j2 != NULL) {
        check_full_fields(j2);
        uint8_t *b2 = pack(j2, &n2);
        CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0);
        free(b2);
    }

    /* AWS's spelling: names, order, epoch seconds with their fraction. */
    CHECK(contains(aws, "{\"batchInferenceJob\":{\"jobName\":\"nightly-recs-2023-11-14\","
                        "\"batchInferenceJobArn\":"));
    CHECK(contains(aws, "\"numResults\":25,\"jobInput\":{\"s3DataSource\":{\"path\":"
                        "\"s3://example-personalize-input/batch/users.json\",\"kmsKeyArn\":"));
    CHECK(contains(aws, "\"batchInferenceJobConfig\":{\"itemExplorationConfig\":{"
                        "\"explorationWeight\":\"0.3\",\"explorationItemAgeCutOff\":\"30\"},"
                        "\"rankingInfluence\":{\"POPULARITY\":0.25,\"FRESHNESS\":0.7}}"));
    CHECK(contains(aws, "\"batchInferenceJobMode\":\"THEME_GENERATION\","
                        "\"themeGenerationConfig\":{\"fieldsForThemeGeneration\":{"
                        "\"itemName\":\"TITLE\"}},\"status\":\"CREATE FAILED\","
                        "\"creationDateTime\":1700000000.123,"
                        "\"lastUpdatedDateTime\":1700003600.456}}"));

    /* proto3 JSON. */
    char *p3 = pgw_job_to_proto3_json(u);
    CHECK(contains(p3, "\"creationDateTime\":\"2023-11-14T22:13:20.123Z\""));
    CHECK(contains(p3, "\"lastUpdatedDateTime\":\"2023-11-14T23:13:20.456Z\""));
    CHECK(contains(p3, "\"batchInferenceJobMode\":\"BATCH_INFERENCE_JOB_MODE_THEME_GENERATION\""));
    CHECK(contains(p3, "\"numResults\":25,"));
    CHECK(contains(p3, "\"rankingInfluence\":{\"POPULARITY\":0.25,\"FRESHNESS\":0.7}"));
    CHECK(contains(p3, "{\"batchInferenceJob\":{\"jobName\":"));

    /* The consumers' own parsers. */
    char tmpl[] = "/tmp/pgw_test_job_json.XXXXXX";
    char *dir = mkdtemp(tmpl);
    CHECK(dir != NULL);
    if (dir != NULL && aws != NULL && p3 != NULL) {
        char path[1200], fixture[1200];
        snprintf(path, sizeof(path), "%s/aws.json", dir);
        CHECK(write_file(path, aws, strlen(aws)) == 0);
        snprintf(path, sizeof(path), "%s/proto3.json", dir);
        CHECK(write_file(path, p3, strlen(p3)) == 0);
        snprintf(path, sizeof(path), "%s/job.pb", dir);
        CHECK(write_file(path, b1, n1) == 0);
        snprintf(fixture, sizeof(fixture), "%s/fixtures/job_full.json", test_dir);
        int py = python_check(dir, fixture);
        if (py < 0)
            printf("python cross-check skipped (PGW_PYTHON, protoc or modules missing)\n");
        else
            CHECK(py == 1);
        static const char *const files[] = {"aws.json", "proto3.json", "job.pb", "fds.pb",
                                            "check.py"};
        for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
            snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
            unlink(path);
        }
        rmdir(dir);
    }

    free(p3);
    free(aws);
    free(b1);
    pgw_job_free(j2);
    protobuf_c_message_free_unpacked(&u->base, NULL);
    /* The generic protobuf-c free is correct for parsed jobs too. */
    protobuf_c_message_free_unpacked(&j->base, NULL);
    free(body);
}

static void test_minimal(void)
{
    size_t len;
    char *body = read_fixture("job_minimal.json", &len);
    CHECK(body != NULL);
    if (body == NULL)
        return;
    Job *j = parse_ok(body);
    if (j != NULL) {
        CHECK_STR(j->batch_inference_job_arn,
                  "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/minimal-job");
        CHECK_STR(j->status, "PENDING");
        CHECK_STR(j->job_name, "");
        CHECK(j->num_results == 0 && j->job_input == NULL && j->job_output == NULL &&
              j->batch_inference_job_config == NULL && j->theme_generation_config == NULL &&
              j->creation_date_time == NULL && j->last_updated_date_time == NULL &&
              j->batch_inference_job_mode == MODE_UNSPECIFIED);
        char *aws = pgw_job_to_aws_json(j);
        CHECK_STR(aws, "{\"batchInferenceJob\":{\"batchInferenceJobArn\":\"arn:aws:personalize:"
                       "us-east-1:123456789012:batch-inference-job/minimal-job\",\"status\":"
                       "\"PENDING\"}}");
        char *p3 = pgw_job_to_proto3_json(j);
        CHECK_STR(p3, aws);
        free(aws);
        free(p3);
        pgw_job_free(j);
    }
    free(body);

    Job empty = PERSONALIZE_GATEWAY__V1__BATCH_INFERENCE_JOB__INIT;
    char *s = pgw_job_to_aws_json(&empty);
    CHECK_STR(s, "{\"batchInferenceJob\":{}}");
    free(s);
    s = pgw_job_to_proto3_json(NULL);
    CHECK_STR(s, "{}");
    free(s);
    s = pgw_job_to_aws_json(NULL);
    CHECK_STR(s, "{}");
    free(s);
    pgw_job_free(NULL);
}

static void test_unknown_and_null(void)
{
    Job *j = parse_ok("{\"batchInferenceJob\":{\"status\":\"SOME NEW STATE\","
                      "\"batchInferenceJobMode\":\"FUTURE_MODE\",\"brandNewField\":{\"x\":[1,2]},"
                      "\"jobInput\":{\"s3DataSource\":{\"path\":\"s3://b/k\",\"extra\":true},"
                      "\"other\":1},\"batchInferenceJobConfig\":{\"newKnob\":\"x\"},"
                      "\"jobName\":null,\"numResults\":null,\"jobOutput\":null,"
                      "\"creationDateTime\":null,\"themeGenerationConfig\":{"
                      "\"fieldsForThemeGeneration\":null}},\"nextToken\":\"ignored\"}");
    if (j != NULL) {
        CHECK_STR(j->status, "SOME NEW STATE");
        CHECK(j->batch_inference_job_mode == MODE_UNSPECIFIED);
        CHECK(j->job_input && j->job_input->s3_data_source &&
              strcmp(j->job_input->s3_data_source->path, "s3://b/k") == 0);
        CHECK(j->batch_inference_job_config != NULL &&
              j->batch_inference_job_config->n_item_exploration_config == 0);
        CHECK(j->theme_generation_config != NULL &&
              j->theme_generation_config->fields_for_theme_generation == NULL);
        CHECK_STR(j->job_name, "");
        CHECK(j->job_output == NULL && j->creation_date_time == NULL && j->num_results == 0);
        char *aws = pgw_job_to_aws_json(j);
        CHECK_STR(aws, "{\"batchInferenceJob\":{\"jobInput\":{\"s3DataSource\":{\"path\":"
                       "\"s3://b/k\"}},\"batchInferenceJobConfig\":{},"
                       "\"themeGenerationConfig\":{},\"status\":\"SOME NEW STATE\"}}");
        free(aws);
        pgw_job_free(j);
    }
    j = parse_ok("{\"batchInferenceJob\":{\"batchInferenceJobMode\":\"BATCH_INFERENCE\","
                 "\"jobInput\":{},\"batchInferenceJobConfig\":{\"itemExplorationConfig\":{}}}}");
    if (j != NULL) {
        CHECK(j->batch_inference_job_mode == MODE_BATCH);
        CHECK(j->job_input != NULL && j->job_input->s3_data_source == NULL);
        char *p3 = pgw_job_to_proto3_json(j);
        CHECK_STR(p3, "{\"batchInferenceJob\":{\"jobInput\":{},\"batchInferenceJobConfig\":{},"
                      "\"batchInferenceJobMode\":\"BATCH_INFERENCE_JOB_MODE_BATCH_INFERENCE\"}}");
        free(p3);
        pgw_job_free(j);
    }
    /* Many map entries keep their order, and values of every JSON number form. */
    j = parse_ok("{\"batchInferenceJob\":{\"batchInferenceJobConfig\":{\"rankingInfluence\":"
                 "{\"POPULARITY\":1,\"FRESHNESS\":0.1,\"A\":-2.5e-3,\"B\":1e300,\"C\":0}, "
                 "\"itemExplorationConfig\":{\"z\":\"1\",\"a\":\"\",\"m\":\"\\u00e9\"}}}}");
    if (j != NULL) {
        const PersonalizeGateway__V1__BatchInferenceJobConfig *c = j->batch_inference_job_config;
        CHECK(c->n_ranking_influence == 5 && c->n_item_exploration_config == 3);
        if (c->n_ranking_influence == 5)
            CHECK(c->ranking_influence[0]->value == 1.0 &&
                  c->ranking_influence[2]->value == -0.0025 &&
                  c->ranking_influence[3]->value == 1e300);
        char *aws = pgw_job_to_aws_json(j);
        CHECK(contains(aws, "\"rankingInfluence\":{\"POPULARITY\":1.0,\"FRESHNESS\":0.1,"
                            "\"A\":-0.0025,\"B\":1e300,\"C\":0.0}"));
        CHECK(
            contains(aws, "\"itemExplorationConfig\":{\"z\":\"1\",\"a\":\"\",\"m\":\"\xc3\xa9\"}"));
        Job *j2 = aws ? parse_ok(aws) : NULL;
        if (j2 != NULL) {
            size_t n1, n2;
            uint8_t *b1 = pack(j, &n1), *b2 = pack(j2, &n2);
            CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0);
            free(b1);
            free(b2);
            pgw_job_free(j2);
        }
        free(aws);
        pgw_job_free(j);
    }
}

typedef struct bad_case {
    const char *body;
    const char *want; /* substring of the error */
} bad_case;

static void test_wrong_types(void)
{
    static const bad_case cases[] = {
        {"{\"batchInferenceJob\":{\"jobName\":42}}",
         "upstream returned batchInferenceJob.jobName of type number, expected string"},
        {"{\"batchInferenceJob\":{\"batchInferenceJobArn\":[]}}",
         "batchInferenceJob.batchInferenceJobArn of type array, expected string"},
        {"{\"batchInferenceJob\":{\"filterArn\":{}}}", "filterArn of type object"},
        {"{\"batchInferenceJob\":{\"failureReason\":true}}", "failureReason of type boolean"},
        {"{\"batchInferenceJob\":{\"solutionVersionArn\":1.5}}",
         "solutionVersionArn of type number"},
        {"{\"batchInferenceJob\":{\"roleArn\":false}}", "roleArn of type boolean"},
        {"{\"batchInferenceJob\":{\"status\":7}}", "batchInferenceJob.status of type number"},
        {"{\"batchInferenceJob\":{\"numResults\":\"25\"}}",
         "batchInferenceJob.numResults of type string, expected integer"},
        {"{\"batchInferenceJob\":{\"numResults\":2.5}}", "numResults 2.5, expected an integer"},
        {"{\"batchInferenceJob\":{\"numResults\":2147483648}}", "numResults 2147483648, which is "
                                                                "out of range for int32"},
        {"{\"batchInferenceJob\":{\"numResults\":-2147483649}}", "out of range for int32"},
        {"{\"batchInferenceJob\":{\"numResults\":1e10}}", "out of range for int32"},
        {"{\"batchInferenceJob\":{\"jobInput\":\"s3://x\"}}",
         "batchInferenceJob.jobInput of type string, expected object"},
        {"{\"batchInferenceJob\":{\"jobInput\":{\"s3DataSource\":[]}}}",
         "batchInferenceJob.jobInput.s3DataSource of type array, expected object"},
        {"{\"batchInferenceJob\":{\"jobInput\":{\"s3DataSource\":{\"path\":1}}}}",
         "batchInferenceJob.jobInput.s3DataSource.path of type number"},
        {"{\"batchInferenceJob\":{\"jobOutput\":{\"s3DataDestination\":{\"kmsKeyArn\":{}}}}}",
         "batchInferenceJob.jobOutput.s3DataDestination.kmsKeyArn of type object"},
        {"{\"batchInferenceJob\":{\"jobOutput\":[]}}", "batchInferenceJob.jobOutput of type array"},
        {"{\"batchInferenceJob\":{\"batchInferenceJobConfig\":\"x\"}}",
         "batchInferenceJobConfig of type string, expected object"},
        {"{\"batchInferenceJob\":{\"batchInferenceJobConfig\":{\"itemExplorationConfig\":[]}}}",
         "batchInferenceJob.batchInferenceJobConfig.itemExplorationConfig of type array"},
        {"{\"batchInferenceJob\":{\"batchInferenceJobConfig\":{\"itemExplorationConfig\":"
         "{\"ok\":\"1\",\"explorationWeight\":0.3}}}}",
         "itemExplorationConfig[\"explorationWeight\"] of type number, expected string"},
        {"{\"batchInferenceJob\":{\"batchInferenceJobConfig\":{\"itemExplorationConfig\":"
         "{\"k\":null}}}}",
         "itemExplorationConfig[\"k\"] of type null"},
        {"{\"batchInferenceJob\":{\"batchInferenceJobConfig\":{\"rankingInfluence\":"
         "{\"POPULARITY\":0.5,\"FRESHNESS\":\"high\"}}}}",
         "batchInferenceJob.batchInferenceJobConfig.rankingInfluence[\"FRESHNESS\"] of type "
         "string, expected number"},
        {"{\"batchInferenceJob\":{\"batchInferenceJobConfig\":{\"rankingInfluence\":7}}}",
         "rankingInfluence of type number, expected object"},
        {"{\"batchInferenceJob\":{\"batchInferenceJobMode\":1}}",
         "batchInferenceJobMode of type number, expected string"},
        {"{\"batchInferenceJob\":{\"themeGenerationConfig\":[]}}",
         "themeGenerationConfig of type array"},
        {"{\"batchInferenceJob\":{\"themeGenerationConfig\":{\"fieldsForThemeGeneration\":\"x\"}}}",
         "themeGenerationConfig.fieldsForThemeGeneration of type string"},
        {"{\"batchInferenceJob\":{\"themeGenerationConfig\":{\"fieldsForThemeGeneration\":"
         "{\"itemName\":[]}}}}",
         "batchInferenceJob.themeGenerationConfig.fieldsForThemeGeneration.itemName of type array"},
        {"{\"batchInferenceJob\":{\"creationDateTime\":\"2023-11-14T22:13:20Z\"}}",
         "batchInferenceJob.creationDateTime of type string, expected number"},
        {"{\"batchInferenceJob\":{\"lastUpdatedDateTime\":-1}}",
         "lastUpdatedDateTime -1, which is not a valid timestamp"},
        {"{\"batchInferenceJob\":{\"lastUpdatedDateTime\":-0.5}}", "not a valid timestamp"},
        {"{\"batchInferenceJob\":{\"creationDateTime\":1e300}}", "not a valid timestamp"},
        {"{\"batchInferenceJob\":{\"creationDateTime\":253402300800}}", "not a valid timestamp"},
        {"{\"batchInferenceJob\":{\"creationDateTime\":253402300799.9999999}}",
         "not a valid timestamp"},
        {"{\"batchInferenceJob\":{\"creationDateTime\":{}}}", "creationDateTime of type object"},
        /* The envelope. */
        {"{}", "upstream response has no batchInferenceJob object"},
        {"{\"batchInferenceJob\":null}", "no batchInferenceJob object"},
        {"{\"BatchInferenceJob\":{}}", "no batchInferenceJob object"},
        {"{\"batchInferenceJob\":\"x\"}", "batchInferenceJob of type string, expected object"},
        {"[{\"batchInferenceJob\":{}}]", "upstream returned a JSON array, expected an object"},
        {"\"batchInferenceJob\"", "invalid JSON"},
        {"{\"batchInferenceJob\":{", "invalid JSON"},
        {"{\"batchInferenceJob\":{}} trailing", "invalid JSON"},
        {"{\"batchInferenceJob\":{\"jobName\":\"a\\u0000b\"}}", "invalid JSON"},
        {"{\"batchInferenceJob\":{\"jobName\":\"\x01\x1b[31m\"}}", "invalid JSON"},
        {"\xff\xfe", "invalid JSON"},
        {"{\"batchInferenceJob\":{\"numResults\":1e999}}", "invalid JSON"},
        {"", "empty body"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Job *j = (Job *)0x1;
        char err[256] = "";
        int rc = pgw_job_from_aws_json(cases[i].body, strlen(cases[i].body), &j, err, sizeof(err));
        CHECK(rc == -1);
        CHECK(j == NULL);
        CHECK(printable(err));
        CHECK(contains(err, cases[i].want));
        if (rc == 0)
            pgw_job_free(j);
    }
    /* A tiny or absent error buffer is fine. */
    Job *j = NULL;
    char tiny[8];
    CHECK(pgw_job_from_aws_json("{}", 2, &j, tiny, sizeof(tiny)) == -1);
    CHECK(strlen(tiny) == 7);
    CHECK(pgw_job_from_aws_json("{}", 2, &j, NULL, 0) == -1);
    CHECK(pgw_job_from_aws_json(NULL, 0, &j, NULL, 0) == -1);
    /* Over the size bound: rejected before parsing. */
    size_t big_len = PGW_JOB_JSON_MAX_BYTES + 1;
    char *big = malloc(big_len);
    memset(big, ' ', big_len);
    memcpy(big, "{\"batchInferenceJob\":{}}", 24);
    char err[256];
    CHECK(pgw_job_from_aws_json(big, big_len, &j, err, sizeof(err)) == -1);
    CHECK(contains(err, "more than the 1048576 allowed"));
    CHECK(pgw_job_from_aws_json(big, big_len - 1, &j, err, sizeof(err)) == 0);
    pgw_job_free(j);
    free(big);
}

/* Parses {"batchInferenceJob":{"creationDateTime": <num>}} and checks the Timestamp and both
 * renderings of it. */
static void check_ts(const char *num, int64_t secs, int32_t nanos, const char *aws_form,
                     const char *rfc3339)
{
    char body[200];
    snprintf(body, sizeof(body), "{\"batchInferenceJob\":{\"creationDateTime\":%s}}", num);
    Job *j = parse_ok(body);
    if (j == NULL)
        return;
    CHECK(j->creation_date_time != NULL);
    if (j->creation_date_time != NULL) {
        CHECK(j->creation_date_time->seconds == secs);
        CHECK(j->creation_date_time->nanos == nanos);
        if (j->creation_date_time->seconds != secs || j->creation_date_time->nanos != nanos)
            fprintf(stderr, "  %s -> %lld.%09d\n", num, (long long)j->creation_date_time->seconds,
                    (int)j->creation_date_time->nanos);
    }
    char want[200];
    char *aws = pgw_job_to_aws_json(j);
    snprintf(want, sizeof(want), "{\"batchInferenceJob\":{\"creationDateTime\":%s}}", aws_form);
    CHECK_STR(aws, want);
    char *p3 = pgw_job_to_proto3_json(j);
    snprintf(want, sizeof(want), "{\"batchInferenceJob\":{\"creationDateTime\":\"%s\"}}", rfc3339);
    CHECK_STR(p3, want);
    free(aws);
    free(p3);
    pgw_job_free(j);
}

static void test_timestamps(void)
{
    check_ts("1700000000", 1700000000, 0, "1700000000.0", "2023-11-14T22:13:20Z");
    check_ts("1700000000.0", 1700000000, 0, "1700000000.0", "2023-11-14T22:13:20Z");
    check_ts("1700000000.123", 1700000000, 123000000, "1700000000.123", "2023-11-14T22:13:20.123Z");
    check_ts("1.700000000123E9", 1700000000, 123000000, "1700000000.123",
             "2023-11-14T22:13:20.123Z");
    check_ts("1700000000.5", 1700000000, 500000000, "1700000000.5", "2023-11-14T22:13:20.500Z");
    check_ts("1700000000.000001", 1700000000, 1000, "1700000000.000001",
             "2023-11-14T22:13:20.000001Z");
    check_ts("1700000000.120001", 1700000000, 120001000, "1700000000.120001",
             "2023-11-14T22:13:20.120001Z");
    /* Rounds to the microsecond, carrying into the seconds. */
    check_ts("1700000000.9999999", 1700000001, 0, "1700000001.0", "2023-11-14T22:13:21Z");
    check_ts("0", 0, 0, "0.0", "1970-01-01T00:00:00Z");
    check_ts("0.25", 0, 250000000, "0.25", "1970-01-01T00:00:00.250Z");
    check_ts("253402300799", 253402300799, 0, "253402300799.0", "9999-12-31T23:59:59Z");
    check_ts("951782400", 951782400, 0, "951782400.0", "2000-02-29T00:00:00Z");

    /* Nanosecond precision and odd values from a packed message (e.g. a newer writer). */
    Job j = PERSONALIZE_GATEWAY__V1__BATCH_INFERENCE_JOB__INIT;
    Google__Protobuf__Timestamp c = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    Google__Protobuf__Timestamp u = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    c.seconds = 1700000000;
    c.nanos = 123456789;
    u.seconds = 1700000000;
    u.nanos = 1000000000; /* invalid: omitted, not fatal */
    j.creation_date_time = &c;
    j.last_updated_date_time = &u;
    char *p3 = pgw_job_to_proto3_json(&j);
    CHECK_STR(p3,
              "{\"batchInferenceJob\":{\"creationDateTime\":\"2023-11-14T22:13:20.123456789Z\"}}");
    free(p3);
    char *aws = pgw_job_to_aws_json(&j);
    CHECK(contains(aws, "{\"batchInferenceJob\":{\"creationDateTime\":1700000000.12345"));
    CHECK(strstr(aws, "lastUpdatedDateTime") == NULL);
    free(aws);
    u.nanos = 0;
    u.seconds = -62135596800; /* 0001-01-01 */
    p3 = pgw_job_to_proto3_json(&j);
    CHECK(contains(p3, "\"lastUpdatedDateTime\":\"0001-01-01T00:00:00Z\""));
    free(p3);
    u.seconds = 253402300800; /* year 10000 */
    p3 = pgw_job_to_proto3_json(&j);
    CHECK(strstr(p3, "lastUpdatedDateTime") == NULL);
    free(p3);
}

static void test_render_edges(void)
{
    Job j = PERSONALIZE_GATEWAY__V1__BATCH_INFERENCE_JOB__INIT;
    PersonalizeGateway__V1__BatchInferenceJobConfig cfg =
        PERSONALIZE_GATEWAY__V1__BATCH_INFERENCE_JOB_CONFIG__INIT;
    PersonalizeGateway__V1__BatchInferenceJobConfig__RankingInfluenceEntry e1 =
        PERSONALIZE_GATEWAY__V1__BATCH_INFERENCE_JOB_CONFIG__RANKING_INFLUENCE_ENTRY__INIT;
    PersonalizeGateway__V1__BatchInferenceJobConfig__RankingInfluenceEntry e2 = e1, e3 = e1;
    PersonalizeGateway__V1__BatchInferenceJobConfig__RankingInfluenceEntry *ents[] = {&e1, &e2,
                                                                                      &e3};
    e1.key = "nan";
    e1.value = NAN;
    e2.key = "inf";
    e2.value = -INFINITY;
    e3.key = "third";
    e3.value = 0.1 + 0.2; /* needs 17 digits to read back */
    cfg.n_ranking_influence = 3;
    cfg.ranking_influence = ents;
    j.batch_inference_job_config = &cfg;
    j.batch_inference_job_mode = (PersonalizeGateway__V1__BatchInferenceJobMode)7;
    j.num_results = -3;
    j.job_name = "bad\xff utf8";
    j.status = "quote\" and \\ and \n";

    char *p3 = pgw_job_to_proto3_json(&j);
    CHECK_STR(p3, "{\"batchInferenceJob\":{\"numResults\":-3,\"batchInferenceJobConfig\":{"
                  "\"rankingInfluence\":{\"nan\":\"NaN\",\"inf\":\"-Infinity\","
                  "\"third\":0.30000000000000004}},\"batchInferenceJobMode\":7,"
                  "\"status\":\"quote\\\" and \\\\ and \\n\"}}");
    free(p3);
    char *aws = pgw_job_to_aws_json(&j);
    CHECK_STR(aws, "{\"batchInferenceJob\":{\"numResults\":-3,\"batchInferenceJobConfig\":{"
                   "\"rankingInfluence\":{\"third\":0.30000000000000004}},"
                   "\"status\":\"quote\\\" and \\\\ and \\n\"}}");
    /* ... and it parses back to the same value. */
    Job *back = aws ? parse_ok(aws) : NULL;
    if (back != NULL) {
        CHECK(back->batch_inference_job_config->n_ranking_influence == 1 &&
              back->batch_inference_job_config->ranking_influence[0]->value == 0.1 + 0.2);
        CHECK_STR(back->status, "quote\" and \\ and \n");
        pgw_job_free(back);
    }
    free(aws);
}

int main(void)
{
    find_test_dir();
    test_full_round_trip();
    test_minimal();
    test_unknown_and_null();
    test_wrong_types();
    test_timestamps();
    test_render_edges();
    return pgw_test_finish("test_job_json");
}

/* Server reflection's answers from the built-in descriptor set: services listed, files by
 * name and by symbol (service, method, message, nested enum) with their imports, errors for
 * unknown names and extension queries, and undecodable requests refused. */
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "service/grpc_reflection.h"
#include "test_util.h"

typedef Grpc__Reflection__V1alpha__ServerReflectionRequest Request;
typedef Grpc__Reflection__V1alpha__ServerReflectionResponse Response;

static Response *ask(pgw_reflection *r, Request *req)
{
    size_t len = grpc__reflection__v1alpha__server_reflection_request__get_packed_size(req);
    uint8_t *buf = malloc(len + 1);
    grpc__reflection__v1alpha__server_reflection_request__pack(req, buf);
    size_t out_len = 0;
    uint8_t *out = pgw_reflection_answer(r, buf, len, &out_len);
    free(buf);
    if (!out)
        return NULL;
    Response *resp =
        grpc__reflection__v1alpha__server_reflection_response__unpack(NULL, out_len, out);
    free(out);
    return resp;
}

static Response *ask_symbol(pgw_reflection *r, const char *symbol)
{
    Request req = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
    req.message_request_case =
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
    req.file_containing_symbol = (char *)symbol;
    return ask(r, &req);
}

/* The name of the first file of a file_descriptor_response, and how many came. */
static const char *first_file(Response *resp, size_t *count, char *name, size_t cap)
{
    *count = 0;
    name[0] = '\0';
    if (!resp ||
        resp->message_response_case !=
            GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE)
        return name;
    *count = resp->file_descriptor_response->n_file_descriptor_proto;
    ProtobufCBinaryData *b = &resp->file_descriptor_response->file_descriptor_proto[0];
    Google__Protobuf__FileDescriptorProto *f =
        google__protobuf__file_descriptor_proto__unpack(NULL, b->len, b->data);
    if (f) {
        snprintf(name, cap, "%s", f->name);
        google__protobuf__file_descriptor_proto__free_unpacked(f, NULL);
    }
    return name;
}

static int error_code(Response *resp)
{
    return resp && resp->message_response_case ==
                       GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE
               ? resp->error_response->error_code
               : -1;
}

int main(void)
{
    pgw_reflection *r = pgw_reflection_new_builtin();
    CHECK(r != NULL);
    if (!r)
        return pgw_test_finish("test_grpc_reflection");

    Request list = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
    list.message_request_case =
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
    list.list_services = "*";
    list.host = "gw";
    Response *resp = ask(r, &list);
    CHECK(
        resp &&
        resp->message_response_case ==
            GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE);
    const char *want[] = {"personalize_gateway.v1.PersonalizeGateway", "grpc.health.v1.Health",
                          "grpc.reflection.v1alpha.ServerReflection",
                          "grpc.reflection.v1.ServerReflection"};
    if (resp && resp->list_services_response) {
        CHECK(resp->list_services_response->n_service == 4);
        for (size_t w = 0; w < 4; w++) {
            int seen = 0;
            for (size_t i = 0; i < resp->list_services_response->n_service; i++)
                seen |= strcmp(resp->list_services_response->service[i]->name, want[w]) == 0;
            CHECK(seen);
        }
        CHECK_STR(resp->valid_host, "gw");
        CHECK(resp->original_request &&
              resp->original_request->message_request_case == list.message_request_case);
    }
    grpc__reflection__v1alpha__server_reflection_response__free_unpacked(resp, NULL);

    char name[256];
    size_t count;
    const char *symbols[] = {
        "personalize_gateway.v1.PersonalizeGateway",
        "personalize_gateway.v1.PersonalizeGateway.DescribeBatchInferenceJob",
        "personalize_gateway.v1.BatchInferenceJob",
        "personalize_gateway.v1.DescribeBatchInferenceJobRequest",
    };
    for (size_t i = 0; i < sizeof(symbols) / sizeof(symbols[0]); i++) {
        resp = ask_symbol(r, symbols[i]);
        first_file(resp, &count, name, sizeof(name));
        CHECK_STR(name, "personalize_gateway/v1/personalize_gateway.proto");
        CHECK(count >= 2); /* with google/protobuf/timestamp.proto */
        grpc__reflection__v1alpha__server_reflection_response__free_unpacked(resp, NULL);
    }
    resp = ask_symbol(r, "grpc.health.v1.HealthCheckResponse.ServingStatus");
    first_file(resp, &count, name, sizeof(name));
    CHECK_STR(name, "grpc/health/v1/health.proto");
    grpc__reflection__v1alpha__server_reflection_response__free_unpacked(resp, NULL);

    Request byname = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
    byname.message_request_case =
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME;
    byname.file_by_filename = "google/protobuf/timestamp.proto";
    resp = ask(r, &byname);
    first_file(resp, &count, name, sizeof(name));
    CHECK_STR(name, "google/protobuf/timestamp.proto");
    CHECK(count == 1);
    grpc__reflection__v1alpha__server_reflection_response__free_unpacked(resp, NULL);

    /* Unknown names, prefixes of real ones, extension queries, an empty request. */
    const char *unknown[] = {"personalize_gateway.v1.Nope", "personalize_gateway.v1",
                             "personalize_gateway.v1.PersonalizeGateway.", "", "."};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        resp = ask_symbol(r, unknown[i]);
        CHECK(error_code(resp) == 5);
        grpc__reflection__v1alpha__server_reflection_response__free_unpacked(resp, NULL);
    }
    byname.file_by_filename = "nope.proto";
    resp = ask(r, &byname);
    CHECK(error_code(resp) == 5);
    grpc__reflection__v1alpha__server_reflection_response__free_unpacked(resp, NULL);
    Request ext = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
    ext.message_request_case =
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE;
    ext.all_extension_numbers_of_type = "personalize_gateway.v1.BatchInferenceJob";
    resp = ask(r, &ext);
    CHECK(error_code(resp) == 12);
    grpc__reflection__v1alpha__server_reflection_response__free_unpacked(resp, NULL);
    Request empty = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
    resp = ask(r, &empty);
    CHECK(error_code(resp) == 3);
    grpc__reflection__v1alpha__server_reflection_response__free_unpacked(resp, NULL);

    static const uint8_t junk[] = {0x1a, 0xff, 0xff, 0xff, 0xff, 0x0f};
    size_t out_len;
    CHECK(pgw_reflection_answer(r, junk, sizeof(junk), &out_len) == NULL);
    CHECK(pgw_reflection_new((const uint8_t *)"\x0a\xff", 2) == NULL);
    pgw_reflection_free(r);
    return pgw_test_finish("test_grpc_reflection");
}

/* Caller identity: which certificate name wins, what counts as a valid identity, and the trusted
 * header of plain-text mode. (The auth-context path runs against real TLS in
 * tests/integration/test_auth_mtls.py.) */
#include <grpc/grpc.h>
#include <string.h>

#include "service/identity.h"
#include "test_util.h"

static void test_valid(void)
{
    CHECK(pgw_identity_valid("spiffe://test/ns/a/sa/x", 23));
    CHECK(!pgw_identity_valid("", 0));
    CHECK(!pgw_identity_valid(NULL, 3));
    CHECK(!pgw_identity_valid("has space", 9));
    CHECK(!pgw_identity_valid("line\nbreak", 10));
    CHECK(!pgw_identity_valid("nul\0byte", 8));
    CHECK(!pgw_identity_valid("caf\xc3\xa9", 5));
    char long_id[PGW_IDENTITY_MAX_LEN + 2];
    memset(long_id, 'a', sizeof(long_id));
    CHECK(pgw_identity_valid(long_id, PGW_IDENTITY_MAX_LEN));
    CHECK(!pgw_identity_valid(long_id, PGW_IDENTITY_MAX_LEN + 1));
}

static void test_choose(void)
{
    char out[PGW_IDENTITY_MAX_LEN + 1];
    pgw_identity_candidates c = {
        .spiffe_id = "spiffe://t/a", .uri = "https://other", .dns = "svc.example", .cn = "cn"};
    CHECK(pgw_identity_choose(&c, out, sizeof(out)) == 0);
    CHECK_STR(out, "spiffe://t/a");
    c.spiffe_id = NULL;
    CHECK(pgw_identity_choose(&c, out, sizeof(out)) == 0);
    CHECK_STR(out, "https://other");
    c.uri = NULL;
    CHECK(pgw_identity_choose(&c, out, sizeof(out)) == 0);
    CHECK_STR(out, "svc.example");
    c.dns = "bad name"; /* invalid candidates are skipped, not used */
    CHECK(pgw_identity_choose(&c, out, sizeof(out)) == 0);
    CHECK_STR(out, "cn");
    c.cn = NULL;
    CHECK(pgw_identity_choose(&c, out, sizeof(out)) == -1);
    CHECK_STR(out, "");
    /* never truncated into a small buffer */
    c.cn = "abcdefgh";
    char small[4];
    CHECK(pgw_identity_choose(&c, small, sizeof(small)) == -1);
    CHECK_STR(small, "");
}

static void add_md(grpc_metadata_array *md, grpc_metadata *storage, const char *k, const char *v)
{
    storage[md->count].key = grpc_slice_from_static_string(k);
    storage[md->count].value = grpc_slice_from_static_string(v);
    md->count++;
}

static void test_metadata(void)
{
    grpc_metadata storage[4];
    memset(storage, 0, sizeof(storage));
    grpc_metadata_array md = {.count = 0, .capacity = 4, .metadata = storage};
    char out[PGW_IDENTITY_MAX_LEN + 1];
    const char *h = "x-forwarded-client-identity";

    CHECK(pgw_identity_from_metadata(&md, h, out, sizeof(out)) == -1);
    add_md(&md, storage, "user-agent", "grpc-python");
    CHECK(pgw_identity_from_metadata(&md, h, out, sizeof(out)) == -1);
    add_md(&md, storage, h, "spiffe://mesh/ns/a/sa/b");
    CHECK(pgw_identity_from_metadata(&md, h, out, sizeof(out)) == 0);
    CHECK_STR(out, "spiffe://mesh/ns/a/sa/b");
    /* a second copy (the client's own next to the sidecar's) makes it unusable */
    add_md(&md, storage, h, "spiffe://mesh/ns/a/sa/admin");
    CHECK(pgw_identity_from_metadata(&md, h, out, sizeof(out)) == -1);
    CHECK_STR(out, "");
    /* an invalid value is refused */
    md.count = 0;
    add_md(&md, storage, h, "two words");
    CHECK(pgw_identity_from_metadata(&md, h, out, sizeof(out)) == -1);
    md.count = 0;
    add_md(&md, storage, h, "");
    CHECK(pgw_identity_from_metadata(&md, h, out, sizeof(out)) == -1);
}

int main(void)
{
    test_valid();
    test_choose();
    test_metadata();
    return pgw_test_finish("test_identity");
}

#include "cf_test.h"

#include <signal.h>
#include <sodium.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "confide/core.h"
#include "confide/keys.h"

static char errbuf[512];

static const char *fresh_dir(void)
{
    static char dir[300];
    snprintf(dir, sizeof(dir), "%s/keys", cf_test_tmpdir());
    return dir;
}

static void test_generate_and_load(void)
{
    REQUIRE(cf_init() == CF_OK);
    const char *dir = fresh_dir();
    CHECK_OK(cf_keys_generate(dir, 3, 7, 0, errbuf, sizeof(errbuf)));
    struct stat st;
    REQUIRE(stat(dir, &st) == 0);
    CHECK_EQ(st.st_mode & 0777, 0700);
    const char *secret[] = {"gateway.key", "combiner.key", "pseudonym.key", "data.key",
                            "signing.key", "party-1.key",  "party-2.key"};
    for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]); i++) {
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", dir, secret[i]);
        REQUIRE(stat(path, &st) == 0);
        CHECK_EQ(st.st_mode & 0777, 0600);
        cf_key *k = NULL;
        CHECK_OK(cf_key_load(dir, secret[i], &k, errbuf, sizeof(errbuf)));
        REQUIRE(k != NULL);
        CHECK_EQ(k->epoch, 7);
        cf_key_destroy(k);
    }
    char path[512];
    snprintf(path, sizeof(path), "%s/signing.pub", dir);
    REQUIRE(stat(path, &st) == 0);
    CHECK_EQ(st.st_mode & 0777, 0644);
    snprintf(path, sizeof(path), "%s/party-3.key", dir);
    CHECK(stat(path, &st) != 0); /* k = 3: parties 1 and 2 only */

    /* The signing pair works end to end. */
    cf_key *sk = NULL;
    uint8_t pk[CF_KEY_SIGN_PK_LEN], id[CF_KEY_ID_LEN];
    uint32_t epoch = 0;
    REQUIRE(cf_key_load(dir, "signing.key", &sk, errbuf, sizeof(errbuf)) == CF_OK);
    CHECK_OK(cf_key_load_signing_pub(dir, pk, id, &epoch, errbuf, sizeof(errbuf)));
    CHECK_EQ(epoch, 7);
    CHECK(memcmp(id, sk->id, CF_KEY_ID_LEN) == 0);
    uint8_t sig[crypto_sign_BYTES];
    const uint8_t msg[] = "tree head";
    crypto_sign_detached(sig, NULL, msg, sizeof(msg), sk->bytes);
    CHECK(crypto_sign_verify_detached(sig, msg, sizeof(msg), pk) == 0);
    sig[0] ^= 1;
    CHECK(crypto_sign_verify_detached(sig, msg, sizeof(msg), pk) != 0);
    cf_key_destroy(sk);
    /* The key file holds no secret in a form the CLI would print: it never contains "pk". */
}

static void test_ids_and_layout(void)
{
    REQUIRE(cf_init() == CF_OK);
    const char *dir = fresh_dir();
    REQUIRE(cf_keys_generate(dir, 4, 1, 0, errbuf, sizeof(errbuf)) == CF_OK);
    cf_key *gw = NULL, *comb = NULL, *p2 = NULL, *data = NULL;
    REQUIRE(cf_key_load(dir, "gateway.key", &gw, errbuf, sizeof(errbuf)) == CF_OK);
    REQUIRE(cf_key_load(dir, "combiner.key", &comb, errbuf, sizeof(errbuf)) == CF_OK);
    REQUIRE(cf_key_load_party(dir, 2, &p2, errbuf, sizeof(errbuf)) == CF_OK);
    REQUIRE(cf_key_load(dir, "data.key", &data, errbuf, sizeof(errbuf)) == CF_OK);
    cf_key *aud = NULL;
    REQUIRE(cf_key_load(dir, "auditor.key", &aud, errbuf, sizeof(errbuf)) == CF_OK);
    CHECK_EQ(cf_key_parties(gw), 4);
    CHECK_EQ(cf_key_parties(comb), 0); /* the combiner holds the MAC master only, no seeds */
    CHECK_EQ(comb->len, CF_KEY_MAC_LEN);
    CHECK(cf_key_seed(comb, 1) == NULL);
    CHECK_EQ(cf_key_parties(data), 0);
    CHECK(cf_key_mac_master(gw) != NULL);
    CHECK(memcmp(cf_key_mac_master(gw), cf_key_mac_master(comb), CF_KEY_MAC_LEN) == 0);
    CHECK(cf_key_mac_master(data) == NULL);
    /* the auditor holds every seed and no MAC master: it attributes, it cannot mint */
    CHECK_EQ(cf_key_parties(aud), 4);
    CHECK(cf_key_mac_master(aud) == NULL);
    CHECK_EQ(aud->len, 3 * CF_KEY_SEED_LEN);
    for (unsigned i = 1; i < 4; i++) {
        CHECK(memcmp(cf_key_seed(gw, i), cf_key_seed(aud, i), CF_KEY_SEED_LEN) == 0);
    }
    CHECK(memcmp(cf_key_seed(gw, 2), cf_key_seed(p2, 0), CF_KEY_SEED_LEN) == 0);
    CHECK(memcmp(cf_key_seed(gw, 1), cf_key_seed(gw, 2), CF_KEY_SEED_LEN) != 0);
    CHECK(cf_key_seed(gw, 0) == NULL);
    CHECK(cf_key_seed(gw, 4) == NULL);
    CHECK_EQ(data->len, 32);
    /* ids are random: distinct per key, and not a function of the material (a second
     * generation of the same kind gets another id; an id derived from a 61-bit MAC key
     * could be searched offline) */
    CHECK(memcmp(gw->id, comb->id, CF_KEY_ID_LEN) != 0);
    CHECK(memcmp(gw->id, aud->id, CF_KEY_ID_LEN) != 0);
    uint8_t h[crypto_generichash_BYTES];
    crypto_generichash(h, sizeof(h), comb->bytes, comb->len, NULL, 0);
    CHECK(memcmp(h, comb->id, CF_KEY_ID_LEN) != 0);
    cf_key_destroy(aud);
    char hex[2 * CF_KEY_ID_LEN + 1];
    cf_key_id_hex(data->id, hex);
    CHECK_EQ(strlen(hex), 16);
    cf_key_destroy(gw);
    cf_key_destroy(comb);
    cf_key_destroy(p2);
    cf_key_destroy(data);
    cf_key_destroy(NULL);
}

static void test_refuses_overwrite(void)
{
    REQUIRE(cf_init() == CF_OK);
    const char *dir = fresh_dir();
    REQUIRE(cf_keys_generate(dir, 2, 1, 0, errbuf, sizeof(errbuf)) == CF_OK);
    cf_key *before = NULL;
    REQUIRE(cf_key_load(dir, "data.key", &before, errbuf, sizeof(errbuf)) == CF_OK);
    errbuf[0] = '\0';
    CHECK_EQ(cf_keys_generate(dir, 2, 2, 0, errbuf, sizeof(errbuf)), CF_E_STATE);
    CHECK(strstr(errbuf, "already exists") != NULL);
    CHECK(strstr(errbuf, "--force") != NULL);
    cf_key *after = NULL;
    REQUIRE(cf_key_load(dir, "data.key", &after, errbuf, sizeof(errbuf)) == CF_OK);
    CHECK(memcmp(before->bytes, after->bytes, 32) == 0);
    CHECK_EQ(after->epoch, 1);
    cf_key_destroy(before);
    cf_key_destroy(after);
    CHECK_EQ(cf_keys_generate(dir, 1, 1, 1, errbuf, sizeof(errbuf)), CF_E_INVAL);
    CHECK_EQ(cf_keys_generate(dir, 9, 1, 1, errbuf, sizeof(errbuf)), CF_E_INVAL);
}

static void test_force_rotates_epoch(void)
{
    REQUIRE(cf_init() == CF_OK);
    const char *dir = fresh_dir();
    REQUIRE(cf_keys_generate(dir, 2, 1, 0, errbuf, sizeof(errbuf)) == CF_OK);
    cf_key *old = NULL, *nw = NULL;
    REQUIRE(cf_key_load(dir, "signing.key", &old, errbuf, sizeof(errbuf)) == CF_OK);
    CHECK_OK(cf_keys_generate(dir, 2, 2, 1, errbuf, sizeof(errbuf)));
    REQUIRE(cf_key_load(dir, "signing.key", &nw, errbuf, sizeof(errbuf)) == CF_OK);
    CHECK_EQ(nw->epoch, 2);
    CHECK(memcmp(old->id, nw->id, CF_KEY_ID_LEN) != 0);
    cf_key_destroy(old);
    cf_key_destroy(nw);
    /* rotating from 3 parties to 2 removes the stale party-2.key */
    CHECK_OK(cf_keys_generate(dir, 3, 3, 1, errbuf, sizeof(errbuf)));
    char stale[512];
    struct stat st;
    snprintf(stale, sizeof(stale), "%s/party-2.key", dir);
    CHECK(stat(stale, &st) == 0);
    CHECK_OK(cf_keys_generate(dir, 2, 4, 1, errbuf, sizeof(errbuf)));
    CHECK(stat(stale, &st) != 0);
    /* no temporary files are left behind */
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "ls -a %s | grep -q tmp", dir);
    CHECK(system(cmd) != 0);
}

static void test_bad_permissions(void)
{
    REQUIRE(cf_init() == CF_OK);
    const char *dir = fresh_dir();
    REQUIRE(cf_keys_generate(dir, 2, 1, 0, errbuf, sizeof(errbuf)) == CF_OK);
    char path[512];
    snprintf(path, sizeof(path), "%s/signing.key", dir);
    REQUIRE(chmod(path, 0644) == 0);
    cf_key *k = (cf_key *)1;
    errbuf[0] = '\0';
    CHECK_EQ(cf_key_load(dir, "signing.key", &k, errbuf, sizeof(errbuf)), CF_E_PERM);
    CHECK(k == NULL);
    CHECK(strstr(errbuf, path) != NULL);
    CHECK(strstr(errbuf, "0644") != NULL);
    char fix[600];
    snprintf(fix, sizeof(fix), "chmod 600 %s", path);
    CHECK(strstr(errbuf, fix) != NULL);
    REQUIRE(chmod(path, 0640) == 0);
    CHECK_EQ(cf_key_load(dir, "signing.key", &k, errbuf, sizeof(errbuf)), CF_E_PERM);
    REQUIRE(chmod(path, 0600) == 0);
    CHECK_OK(cf_key_load(dir, "signing.key", &k, errbuf, sizeof(errbuf)));
    cf_key_destroy(k);
    /* public key: world-readable is fine, world-writable is not */
    uint8_t pk[32];
    snprintf(path, sizeof(path), "%s/signing.pub", dir);
    REQUIRE(chmod(path, 0666) == 0);
    CHECK_EQ(cf_key_load_signing_pub(dir, pk, NULL, NULL, errbuf, sizeof(errbuf)), CF_E_PERM);
    CHECK(strstr(errbuf, "chmod 644") != NULL);
    REQUIRE(chmod(path, 0644) == 0);
    CHECK_OK(cf_key_load_signing_pub(dir, pk, NULL, NULL, errbuf, sizeof(errbuf)));
}

static void test_wrong_kind(void)
{
    REQUIRE(cf_init() == CF_OK);
    const char *dir = fresh_dir();
    REQUIRE(cf_keys_generate(dir, 3, 1, 0, errbuf, sizeof(errbuf)) == CF_OK);
    char a[512], b[512];
    /* data.key replaced by the pseudonym key: same length, other kind */
    snprintf(a, sizeof(a), "%s/pseudonym.key", dir);
    snprintf(b, sizeof(b), "%s/data.key", dir);
    REQUIRE(rename(a, b) == 0);
    cf_key *k = NULL;
    errbuf[0] = '\0';
    CHECK_EQ(cf_key_load(dir, "data.key", &k, errbuf, sizeof(errbuf)), CF_E_INVAL);
    CHECK(strstr(errbuf, "'pseudonym'") != NULL && strstr(errbuf, "'data'") != NULL);
    CHECK(k == NULL);
    CHECK_OK(cf_key_load_kind(dir, "data.key", "pseudonym", &k, errbuf, sizeof(errbuf)));
    cf_key_destroy(k);
    k = NULL;
    /* party 1's key presented as party 2 */
    snprintf(a, sizeof(a), "%s/party-1.key", dir);
    snprintf(b, sizeof(b), "%s/party-2.key", dir);
    REQUIRE(rename(a, b) == 0);
    CHECK_EQ(cf_key_load_party(dir, 2, &k, errbuf, sizeof(errbuf)), CF_E_INVAL);
    CHECK(strstr(errbuf, "party 1") != NULL);
    CHECK_EQ(cf_key_load_party(dir, 0, &k, errbuf, sizeof(errbuf)), CF_E_INVAL);
    CHECK_EQ(cf_key_load(dir, "random.key", &k, errbuf, sizeof(errbuf)), CF_E_INVAL);
    CHECK(strstr(errbuf, "random.key") != NULL);
}

static void test_missing_file(void)
{
    REQUIRE(cf_init() == CF_OK);
    const char *dir = fresh_dir();
    cf_key *k = NULL;
    errbuf[0] = '\0';
    CHECK_EQ(cf_key_load(dir, "data.key", &k, errbuf, sizeof(errbuf)), CF_E_NOTFOUND);
    CHECK(strstr(errbuf, "data.key") != NULL);
    CHECK(strstr(errbuf, "confide keygen") != NULL);
    CHECK(k == NULL);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    if (f != NULL) {
        fputs(text, f);
        fclose(f);
    }
    chmod(path, mode);
}

static void test_corrupt_file(void)
{
    REQUIRE(cf_init() == CF_OK);
    const char *dir = fresh_dir();
    REQUIRE(cf_keys_generate(dir, 2, 1, 0, errbuf, sizeof(errbuf)) == CF_OK);
    char path[512];
    snprintf(path, sizeof(path), "%s/data.key", dir);
    size_t len = 0;
    char *text = cf_test_slurp(path, &len);
    REQUIRE(text != NULL);
    /* flip one hex digit of the secret: the check no longer matches */
    char *sec = strstr(text, "secret=");
    REQUIRE(sec != NULL);
    sec[7] = sec[7] == '0' ? '1' : '0';
    write_file(path, text, 0600);
    cf_key *k = NULL;
    CHECK_EQ(cf_key_load(dir, "data.key", &k, errbuf, sizeof(errbuf)), CF_E_CORRUPT);
    /* truncated secret */
    sec[20] = '\n';
    sec[21] = '\0';
    write_file(path, text, 0600);
    CHECK_EQ(cf_key_load(dir, "data.key", &k, errbuf, sizeof(errbuf)), CF_E_PARSE);
    write_file(path, "hello\n", 0600);
    CHECK_EQ(cf_key_load(dir, "data.key", &k, errbuf, sizeof(errbuf)), CF_E_PARSE);
    CHECK(strstr(errbuf, "not a confide key file") != NULL);
    /* a version 1 file (id derived from the key) is refused with what to do */
    write_file(path, "confide-key-v1\nkind=data\n", 0600);
    CHECK_EQ(cf_key_load(dir, "data.key", &k, errbuf, sizeof(errbuf)), CF_E_PARSE);
    CHECK(strstr(errbuf, "version 1") != NULL && strstr(errbuf, "keygen") != NULL);
    write_file(path, "confide-key-v2\nkind=data\nbogus=1\n", 0600);
    CHECK_EQ(cf_key_load(dir, "data.key", &k, errbuf, sizeof(errbuf)), CF_E_PARSE);
    CHECK(strstr(errbuf, "bogus") != NULL);
    write_file(path, "", 0600);
    CHECK_EQ(cf_key_load(dir, "data.key", &k, errbuf, sizeof(errbuf)), CF_E_PARSE);
    /* a FIFO or a symlink in place of a key file is refused without blocking */
    unlink(path);
    REQUIRE(mkfifo(path, 0600) == 0);
    CHECK_EQ(cf_key_load(dir, "data.key", &k, errbuf, sizeof(errbuf)), CF_E_INVAL);
    CHECK(strstr(errbuf, "not a regular file") != NULL);
    unlink(path);
    char other[512];
    snprintf(other, sizeof(other), "%s/pseudonym.key", dir);
    REQUIRE(symlink(other, path) == 0);
    CHECK_EQ(cf_key_load(dir, "data.key", &k, errbuf, sizeof(errbuf)), CF_E_PERM);
    CHECK(strstr(errbuf, "symbolic link") != NULL);
    CHECK(k == NULL);
    free(text);
}

static void test_directory_mode(void)
{
    REQUIRE(cf_init() == CF_OK);
    const char *dir = fresh_dir();
    REQUIRE(mkdir(dir, 0755) == 0);
    REQUIRE(chmod(dir, 0755) == 0);
    errbuf[0] = '\0';
    CHECK_EQ(cf_keys_generate(dir, 2, 1, 0, errbuf, sizeof(errbuf)), CF_E_PERM);
    CHECK(strstr(errbuf, "chmod 700") != NULL);
    REQUIRE(chmod(dir, 0700) == 0);
    CHECK_OK(cf_keys_generate(dir, 2, 1, 0, errbuf, sizeof(errbuf)));
}

static void test_wiped_after_destroy(void)
{
    REQUIRE(cf_init() == CF_OK);
    const char *dir = fresh_dir();
    REQUIRE(cf_keys_generate(dir, 2, 1, 0, errbuf, sizeof(errbuf)) == CF_OK);
    cf_key *k = NULL;
    REQUIRE(cf_key_load(dir, "data.key", &k, errbuf, sizeof(errbuf)) == CF_OK);
    /* sodium_malloc places a region right before a guard page: the end is page-aligned */
    long page = sysconf(_SC_PAGESIZE);
    CHECK((((uintptr_t)k->bytes + k->len) % (uintptr_t)page) == 0);
    /* after destroy the pages are gone: reading them in a child faults */
    volatile uint8_t *p = k->bytes;
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL);
        cf_key_destroy(k);
        uint8_t x = p[0];
        _exit(x == 0 ? 10 : 11); /* reaching here means the memory stayed readable */
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(!(WIFEXITED(status) && (WEXITSTATUS(status) == 10 || WEXITSTATUS(status) == 11)));
    cf_key_destroy(k);
}

static void test_alloc_failure(void)
{
    REQUIRE(cf_init() == CF_OK);
    const char *dir = fresh_dir();
    REQUIRE(cf_keys_generate(dir, 2, 1, 0, errbuf, sizeof(errbuf)) == CF_OK);
    cf_key *k = (cf_key *)1;
    cf_alloc_fail_after(1);
    CHECK_EQ(cf_key_load(dir, "data.key", &k, errbuf, sizeof(errbuf)), CF_E_NOMEM);
    CHECK(k == NULL);
    cf_alloc_fail_after(0);
    CHECK_OK(cf_key_load(dir, "data.key", &k, errbuf, sizeof(errbuf)));
    cf_key_destroy(k);
}

#include "cf_test_main.h"

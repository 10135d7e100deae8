/*
 * Key files: generation, atomic writing, loading with permission checks.
 *
 * Format (docs/security.md): a small line-oriented text file, "name=value" per line,
 * '#' comments, first non-comment line "confide-key-v2". The key id is random, drawn when the
 * key is made: an id derived from the key would let anyone who sees it (it is printed and
 * carried in results) test guesses of a low-entropy secret offline. A "check" field, kept
 * in the file only, is a keyed hash of the material that catches a corrupt or edited file. Secrets
 * travel from the generator to disk and from disk to cf_key.bytes only through sodium_malloc'd
 * buffers that are wiped before they are freed; the file is read into such a buffer too because it
 * holds the hex.
 *
 * Files are written atomically (mkstemp in the same directory, write, fsync, rename, fsync
 * the directory), so a crash leaves either the old key or the new one, never half a key.
 * Bounds: a key file is at most KEYFILE_MAX bytes; k <= 8 parties. No global state; every
 * function is thread-safe.
 */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "confide/core.h"
#include "confide/keys.h"

#define KEYFILE_MAX 4096
#define CHECK_DOMAIN "confide-key-check-v2"
#define CHECK_LEN 16

void cf_key_id_hex(const uint8_t id[CF_KEY_ID_LEN], char out[2 * CF_KEY_ID_LEN + 1])
{
    sodium_bin2hex(out, 2 * CF_KEY_ID_LEN + 1, id, CF_KEY_ID_LEN);
}

/* check = BLAKE2b-128(key = id, CHECK_DOMAIN || kind || material): it binds the material to
 * its id and kind, and reveals nothing, since it never leaves the file that holds the key. */
static void key_check(const char *kind, const uint8_t id[CF_KEY_ID_LEN], const uint8_t *material,
                      size_t len, uint8_t out[CHECK_LEN])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, id, CF_KEY_ID_LEN, CHECK_LEN);
    crypto_generichash_update(&st, (const uint8_t *)CHECK_DOMAIN, strlen(CHECK_DOMAIN));
    crypto_generichash_update(&st, (const uint8_t *)kind, strlen(kind) + 1);
    crypto_generichash_update(&st, material, len);
    crypto_generichash_final(&st, out, CHECK_LEN);
    sodium_memzero(&st, sizeof(st));
}

/* The kind a standard file name must hold; NULL for names outside the layout. */
static const struct {
    const char *name, *kind;
} layout[] = {
    {"gateway.key", CF_KEY_KIND_GATEWAY},     {"combiner.key", CF_KEY_KIND_COMBINER},
    {"auditor.key", CF_KEY_KIND_AUDITOR},     {"pseudonym.key", CF_KEY_KIND_PSEUDONYM},
    {"data.key", CF_KEY_KIND_DATA},           {"signing.key", CF_KEY_KIND_SIGNING},
    {"signing.pub", CF_KEY_KIND_SIGNING_PUB}, {"results.key", CF_KEY_KIND_RESULTS},
    {"results.pub", CF_KEY_KIND_RESULTS_PUB}, {"witness.key", CF_KEY_KIND_WITNESS},
    {"witness.pub", CF_KEY_KIND_WITNESS_PUB},
};

static const char *kind_for_name(const char *name)
{
    for (size_t i = 0; i < sizeof(layout) / sizeof(layout[0]); i++) {
        if (strcmp(name, layout[i].name) == 0) {
            return layout[i].kind;
        }
    }
    return strncmp(name, "party-", 6) == 0 ? CF_KEY_KIND_PARTY : NULL;
}

static bool kind_is_public(const char *kind)
{
    return strcmp(kind, CF_KEY_KIND_SIGNING_PUB) == 0 ||
           strcmp(kind, CF_KEY_KIND_RESULTS_PUB) == 0 || strcmp(kind, CF_KEY_KIND_WITNESS_PUB) == 0;
}

/* ---- writing -------------------------------------------------------------------------- */

static cf_err fsync_dir(const char *dir, char *errstr, size_t errstr_size)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return cf_err_errno(errno, errstr, errstr_size, "open directory %s", dir);
    }
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0) {
        return cf_err_errno(e, errstr, errstr_size, "fsync directory %s", dir);
    }
    return CF_OK;
}

/*
 * Writes @p text (len bytes) to DIR/name atomically with @p mode. The text may hold a
 * secret: the caller wipes it.
 */
static cf_err write_atomic(const char *dir, const char *name, const char *text, size_t len,
                           mode_t mode, char *errstr, size_t errstr_size)
{
    char tmp[4096];
    char path[4096];
    int fd = -1;
    cf_err err = CF_OK;
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path) ||
        (size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.tmp.XXXXXX", dir, name) >= sizeof(tmp)) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "key path too long: %s/%s", dir, name);
    }
    fd = mkstemp(tmp); /* created 0600 by POSIX */
    if (fd < 0) {
        return cf_err_errno(errno, errstr, errstr_size, "create %s", tmp);
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            err = cf_err_errno(errno, errstr, errstr_size, "write %s", tmp);
            goto fail;
        }
        off += (size_t)w;
    }
    if (fchmod(fd, mode) != 0) {
        err = cf_err_errno(errno, errstr, errstr_size, "chmod %s", tmp);
        goto fail;
    }
    if (fsync(fd) != 0) {
        err = cf_err_errno(errno, errstr, errstr_size, "fsync %s", tmp);
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        err = cf_err_errno(errno, errstr, errstr_size, "close %s", tmp);
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        err = cf_err_errno(errno, errstr, errstr_size, "rename %s to %s", tmp, path);
        goto fail;
    }
    return fsync_dir(dir, errstr, errstr_size);
fail:
    if (fd >= 0) {
        close(fd);
    }
    unlink(tmp);
    return err;
}

/*
 * Formats and writes one key file. @p party is written when > 0, @p parties when > 0.
 * The formatted text lives in sodium_malloc memory and is wiped.
 */
static cf_err write_key(const char *dir, const char *name, const char *kind,
                        const uint8_t id[CF_KEY_ID_LEN], uint32_t epoch, unsigned parties,
                        unsigned party, const uint8_t *bytes, size_t len, char *errstr,
                        size_t errstr_size)
{
    bool pub = kind_is_public(kind);
    char idhex[2 * CF_KEY_ID_LEN + 1];
    uint8_t check[CHECK_LEN];
    char checkhex[2 * CHECK_LEN + 1];
    cf_key_id_hex(id, idhex);
    key_check(kind, id, bytes, len, check);
    sodium_bin2hex(checkhex, sizeof(checkhex), check, sizeof(check));

    char *text = sodium_malloc(KEYFILE_MAX);
    char *hex = sodium_malloc(2 * len + 1);
    cf_err err = CF_OK;
    if (text == NULL || hex == NULL) {
        err = CF_E_NOMEM;
        goto done;
    }
    sodium_bin2hex(hex, 2 * len + 1, bytes, len);
    int n = snprintf(text, KEYFILE_MAX,
                     "# confide %s key file (docs/security.md).%s\n"
                     "confide-key-v2\nkind=%s\nid=%s\nepoch=%u\ncheck=%s\n",
                     kind, pub ? "" : " SECRET: keep mode 0600, never share, copy or log.", kind,
                     idhex, (unsigned)epoch, checkhex);
    if (parties > 0) {
        n += snprintf(text + n, KEYFILE_MAX - (size_t)n, "parties=%u\n", parties);
    }
    if (party > 0) {
        n += snprintf(text + n, KEYFILE_MAX - (size_t)n, "party=%u\n", party);
    }
    n += snprintf(text + n, KEYFILE_MAX - (size_t)n, "%s=%s\n", pub ? "public" : "secret", hex);
    CF_ASSERT(n > 0 && n < KEYFILE_MAX);
    err = write_atomic(dir, name, text, (size_t)n, pub ? 0644 : 0600, errstr, errstr_size);
done:
    if (text != NULL) {
        sodium_memzero(text, KEYFILE_MAX);
        sodium_free(text);
    }
    if (hex != NULL) {
        sodium_memzero(hex, 2 * len + 1);
        sodium_free(hex);
    }
    return err;
}

static cf_err prepare_dir(const char *dir, char *errstr, size_t errstr_size)
{
    struct stat st;
    if (mkdir(dir, 0700) != 0) {
        if (errno != EEXIST) {
            return cf_err_errno(errno, errstr, errstr_size, "create key directory %s", dir);
        }
    }
    if (stat(dir, &st) != 0) {
        return cf_err_errno(errno, errstr, errstr_size, "stat %s", dir);
    }
    if (!S_ISDIR(st.st_mode)) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "%s exists and is not a directory", dir);
    }
    if ((st.st_mode & 077) != 0) {
        return cf_err_set(CF_E_PERM, errstr, errstr_size,
                          "key directory %s has mode %04o (group/world accessible); "
                          "fix with: chmod 700 %s",
                          dir, (unsigned)(st.st_mode & 07777), dir);
    }
    return CF_OK;
}

/* One key of a generation: where it goes and which bytes of the secret buffer it holds. */
typedef struct gen_key {
    char name[32];
    const char *kind;
    const uint8_t *bytes;
    size_t len;
    unsigned parties, party;
    const uint8_t *id; /* shared by a key pair */
} gen_key;

cf_err cf_keys_generate(const char *dir, unsigned parties, uint32_t epoch, int force, char *errstr,
                        size_t errstr_size)
{
    enum { KEYS_MAX = 9 + CF_KEY_PARTIES_MAX };
    gen_key keys[KEYS_MAX];
    uint8_t ids[KEYS_MAX][CF_KEY_ID_LEN];
    unsigned nk = 0;
    uint8_t *buf = NULL;
    size_t seeds_max = (size_t)(CF_KEY_PARTIES_MAX - 1) * CF_KEY_SEED_LEN;
    /* one secure buffer for every secret:
     * mac master | seeds | pseudonym | data | signing sk | results sk */
    size_t total = CF_KEY_MAC_LEN + seeds_max + 2 * CF_KEY_SYM_LEN + 2 * CF_KEY_SIGN_SK_LEN;
    cf_err err = CF_OK;
    if (dir == NULL || parties < CF_KEY_PARTIES_MIN || parties > CF_KEY_PARTIES_MAX) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "--parties must be between %d and %d (got %u)", CF_KEY_PARTIES_MIN,
                          CF_KEY_PARTIES_MAX, parties);
    }
    if (cf_init() != CF_OK) {
        return cf_err_set(CF_E_CRYPTO, errstr, errstr_size, "libsodium initialization failed");
    }
    err = prepare_dir(dir, errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    buf = sodium_malloc(total);
    if (buf == NULL) {
        return cf_err_set(CF_E_NOMEM, errstr, errstr_size, "sodium_malloc failed");
    }
    uint8_t *mac = buf; /* gateway.key: mac master || seeds, contiguous */
    uint8_t *seeds = mac + CF_KEY_MAC_LEN;
    uint8_t *pseudo = seeds + seeds_max;
    uint8_t *data = pseudo + CF_KEY_SYM_LEN;
    uint8_t *sk = data + CF_KEY_SYM_LEN;
    uint8_t *rsk = sk + CF_KEY_SIGN_SK_LEN;
    uint8_t pk[CF_KEY_SIGN_PK_LEN], rpk[CF_KEY_SIGN_PK_LEN];
    size_t nseeds = (size_t)(parties - 1) * CF_KEY_SEED_LEN;
    randombytes_buf(mac, CF_KEY_MAC_LEN + nseeds);
    randombytes_buf(pseudo, 2 * CF_KEY_SYM_LEN);
    randombytes_buf(ids, sizeof(ids));
    if (crypto_sign_keypair(pk, sk) != 0 || crypto_sign_keypair(rpk, rsk) != 0) {
        err = cf_err_set(CF_E_CRYPTO, errstr, errstr_size, "Ed25519 key generation failed");
        goto done;
    }
#define KEY(n, k, b, l, np, pi, idi)                                                               \
    keys[nk] = (gen_key){                                                                          \
        .kind = (k), .bytes = (b), .len = (l), .parties = (np), .party = (pi), .id = ids[idi]};    \
    snprintf(keys[nk].name, sizeof(keys[nk].name), "%s", (n));                                     \
    nk++
    /* The gateway makes shares and MACs: it holds the MAC master secret and every seed. The
     * combiner checks MACs: the master only (with the seeds, a combiner colluding with party
     * 0 would see every amount). The auditor attributes a failed MAC to a party: the seeds
     * only, so it can never mint an aggregate whose MAC verifies. */
    KEY("gateway.key", CF_KEY_KIND_GATEWAY, mac, CF_KEY_MAC_LEN + nseeds, parties, 0, 0);
    KEY("combiner.key", CF_KEY_KIND_COMBINER, mac, CF_KEY_MAC_LEN, parties, 0, 1);
    KEY("auditor.key", CF_KEY_KIND_AUDITOR, seeds, nseeds, parties, 0, 2);
    for (unsigned i = 1; i < parties; i++) {
        char name[32];
        snprintf(name, sizeof(name), "party-%u.key", i);
        KEY(name, CF_KEY_KIND_PARTY, seeds + (size_t)(i - 1) * CF_KEY_SEED_LEN, CF_KEY_SEED_LEN,
            parties, i, 2 + i);
    }
    KEY("pseudonym.key", CF_KEY_KIND_PSEUDONYM, pseudo, CF_KEY_SYM_LEN, 0, 0, 2 + parties);
    KEY("data.key", CF_KEY_KIND_DATA, data, CF_KEY_SYM_LEN, 0, 0, 3 + parties);
    KEY("signing.key", CF_KEY_KIND_SIGNING, sk, CF_KEY_SIGN_SK_LEN, 0, 0, 4 + parties);
    KEY("results.key", CF_KEY_KIND_RESULTS, rsk, CF_KEY_SIGN_SK_LEN, 0, 0, 5 + parties);
    KEY("results.pub", CF_KEY_KIND_RESULTS_PUB, rpk, CF_KEY_SIGN_PK_LEN, 0, 0, 5 + parties);
    /* Public key last: its presence marks a complete generation. */
    KEY("signing.pub", CF_KEY_KIND_SIGNING_PUB, pk, CF_KEY_SIGN_PK_LEN, 0, 0, 4 + parties);
#undef KEY
    CF_ASSERT(nk <= KEYS_MAX);
    /* Check every file before writing any, so a refused run changes nothing. */
    for (unsigned i = 0; !force && i < nk; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, keys[i].name);
        if (lstat(path, &st) == 0) {
            err = cf_err_set(CF_E_STATE, errstr, errstr_size,
                             "%s already exists; refusing to overwrite keys (use --force "
                             "to replace them, see docs/security.md on rotation)",
                             path);
            goto done;
        }
    }
    for (unsigned i = 0; err == CF_OK && i < nk; i++) {
        err = write_key(dir, keys[i].name, keys[i].kind, keys[i].id, epoch, keys[i].parties,
                        keys[i].party, keys[i].bytes, keys[i].len, errstr, errstr_size);
    }
    /* A rotation to fewer parties must not leave the old epoch's seeds behind. */
    for (unsigned i = parties; err == CF_OK && i < CF_KEY_PARTIES_MAX; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/party-%u.key", dir, i);
        if (unlink(path) != 0 && errno != ENOENT) {
            err = cf_err_errno(errno, errstr, errstr_size, "remove stale %s", path);
        }
    }
done:
    sodium_memzero(buf, total);
    sodium_free(buf);
    sodium_memzero(ids, sizeof(ids));
    return err;
}

/* ---- loading -------------------------------------------------------------------------- */

void cf_key_destroy(cf_key *k)
{
    if (k == NULL) {
        return;
    }
    if (k->bytes != NULL) {
        sodium_memzero(k->bytes, k->len);
        sodium_free(k->bytes);
    }
    sodium_memzero(k, sizeof(*k));
    cf_free(k);
}

/* Reads the whole file into sodium_malloc memory after the mode checks. */
static cf_err read_keyfile(const char *path, bool pub, char **text_out, size_t *len_out,
                           char *errstr, size_t errstr_size)
{
    /* O_NONBLOCK: a FIFO planted under a key's name must not hang the loader; it is then
     * refused as not a regular file. For regular files the flag changes nothing. */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    char *text = NULL;
    cf_err err = CF_OK;
    if (fd < 0) {
        if (errno == ENOENT) {
            return cf_err_set(CF_E_NOTFOUND, errstr, errstr_size,
                              "key file %s not found (create keys with: confide keygen --dir "
                              "DIR --parties K)",
                              path);
        }
        if (errno == ELOOP) {
            return cf_err_set(CF_E_PERM, errstr, errstr_size,
                              "key file %s is a symbolic link; refusing to follow it (copy the "
                              "key file itself, mode 0600)",
                              path);
        }
        return cf_err_errno(errno, errstr, errstr_size, "open key file %s", path);
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        err = cf_err_errno(errno, errstr, errstr_size, "stat %s", path);
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        err =
            cf_err_set(CF_E_INVAL, errstr, errstr_size, "key file %s is not a regular file", path);
        goto fail;
    }
    unsigned mode = (unsigned)(st.st_mode & 07777);
    if (!pub && (mode & 077) != 0) {
        err = cf_err_set(CF_E_PERM, errstr, errstr_size,
                         "secret key file %s has mode %04o (group/world accessible); refusing "
                         "to load it. Fix with: chmod 600 %s",
                         path, mode, path);
        goto fail;
    }
    if (pub && (mode & 022) != 0) {
        err = cf_err_set(CF_E_PERM, errstr, errstr_size,
                         "public key file %s has mode %04o (group/world writable); refusing "
                         "to load it. Fix with: chmod 644 %s",
                         path, mode, path);
        goto fail;
    }
    if (st.st_size <= 0 || st.st_size >= KEYFILE_MAX) {
        err = cf_err_set(CF_E_PARSE, errstr, errstr_size, "key file %s has a bad size (%lld)", path,
                         (long long)st.st_size);
        goto fail;
    }
    text = sodium_malloc(KEYFILE_MAX);
    if (text == NULL) {
        err = CF_E_NOMEM;
        goto fail;
    }
    size_t off = 0;
    for (;;) {
        ssize_t r = read(fd, text + off, KEYFILE_MAX - 1 - off);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            err = cf_err_errno(errno, errstr, errstr_size, "read %s", path);
            goto fail;
        }
        if (r == 0) {
            break;
        }
        off += (size_t)r;
        if (off >= KEYFILE_MAX - 1) {
            err = cf_err_set(CF_E_PARSE, errstr, errstr_size, "key file %s is too large", path);
            goto fail;
        }
    }
    text[off] = '\0';
    close(fd);
    *text_out = text;
    *len_out = off;
    return CF_OK;
fail:
    if (text != NULL) {
        sodium_memzero(text, KEYFILE_MAX);
        sodium_free(text);
    }
    close(fd);
    return err;
}

static bool parse_u32(const char *s, uint32_t *out)
{
    if (*s == '\0') {
        return false;
    }
    uint64_t v = 0;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9') {
            return false;
        }
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > UINT32_MAX) {
            return false;
        }
    }
    *out = (uint32_t)v;
    return true;
}

typedef struct parsed {
    char kind[32];
    uint8_t id[CF_KEY_ID_LEN];
    uint32_t epoch;
    uint32_t parties;
    uint32_t party;
    uint8_t check[CHECK_LEN];
    const char *hex; /* points into the secure text buffer */
    size_t hexlen;
    bool has_magic, has_kind, has_id, has_epoch, has_check, has_value, value_public;
} parsed;

static cf_err parse_keyfile(const char *path, char *text, parsed *p, char *errstr,
                            size_t errstr_size)
{
    memset(p, 0, sizeof(*p));
    unsigned lineno = 0;
    char *line = text;
    while (line != NULL && *line != '\0') {
        char *nl = strchr(line, '\n');
        if (nl != NULL) {
            *nl = '\0';
        }
        lineno++;
        size_t ll = strlen(line);
        if (ll > 0 && line[ll - 1] == '\r') {
            line[--ll] = '\0';
        }
        if (ll == 0 || line[0] == '#') {
            goto next;
        }
        if (!p->has_magic) {
            if (strcmp(line, "confide-key-v1") == 0) {
                return cf_err_set(CF_E_PARSE, errstr, errstr_size,
                                  "%s: a version 1 key file (its id was derived from the key "
                                  "and can be used to test guesses of it); create new keys "
                                  "with: confide keygen --dir DIR --parties K --force",
                                  path);
            }
            if (strcmp(line, "confide-key-v2") != 0) {
                return cf_err_set(CF_E_PARSE, errstr, errstr_size,
                                  "%s: not a confide key file (line %u: expected "
                                  "\"confide-key-v2\")",
                                  path, lineno);
            }
            p->has_magic = true;
            goto next;
        }
        char *eq = strchr(line, '=');
        if (eq == NULL) {
            return cf_err_set(CF_E_PARSE, errstr, errstr_size, "%s line %u: expected name=value",
                              path, lineno);
        }
        *eq = '\0';
        const char *name = line;
        const char *val = eq + 1;
        if (strcmp(name, "kind") == 0) {
            if (strlen(val) >= sizeof(p->kind)) {
                return cf_err_set(CF_E_PARSE, errstr, errstr_size, "%s line %u: bad kind", path,
                                  lineno);
            }
            snprintf(p->kind, sizeof(p->kind), "%s", val);
            p->has_kind = true;
        } else if (strcmp(name, "id") == 0) {
            size_t bl = 0;
            if (strlen(val) != 2 * CF_KEY_ID_LEN ||
                sodium_hex2bin(p->id, CF_KEY_ID_LEN, val, strlen(val), NULL, &bl, NULL) != 0 ||
                bl != CF_KEY_ID_LEN) {
                return cf_err_set(CF_E_PARSE, errstr, errstr_size,
                                  "%s line %u: id must be 16 hex digits", path, lineno);
            }
            p->has_id = true;
        } else if (strcmp(name, "check") == 0) {
            size_t bl = 0;
            if (strlen(val) != 2 * CHECK_LEN ||
                sodium_hex2bin(p->check, CHECK_LEN, val, strlen(val), NULL, &bl, NULL) != 0 ||
                bl != CHECK_LEN) {
                return cf_err_set(CF_E_PARSE, errstr, errstr_size,
                                  "%s line %u: check must be %d hex digits", path, lineno,
                                  2 * CHECK_LEN);
            }
            p->has_check = true;
        } else if (strcmp(name, "epoch") == 0) {
            if (!parse_u32(val, &p->epoch)) {
                return cf_err_set(CF_E_PARSE, errstr, errstr_size, "%s line %u: bad epoch", path,
                                  lineno);
            }
            p->has_epoch = true;
        } else if (strcmp(name, "parties") == 0) {
            if (!parse_u32(val, &p->parties) || p->parties < CF_KEY_PARTIES_MIN ||
                p->parties > CF_KEY_PARTIES_MAX) {
                return cf_err_set(CF_E_PARSE, errstr, errstr_size, "%s line %u: bad parties", path,
                                  lineno);
            }
        } else if (strcmp(name, "party") == 0) {
            if (!parse_u32(val, &p->party) || p->party < 1 || p->party >= CF_KEY_PARTIES_MAX) {
                return cf_err_set(CF_E_PARSE, errstr, errstr_size, "%s line %u: bad party", path,
                                  lineno);
            }
        } else if (strcmp(name, "secret") == 0 || strcmp(name, "public") == 0) {
            p->hex = val;
            p->hexlen = strlen(val);
            p->has_value = true;
            p->value_public = strcmp(name, "public") == 0;
        } else {
            return cf_err_set(CF_E_PARSE, errstr, errstr_size, "%s line %u: unknown field '%s'",
                              path, lineno, name);
        }
    next:
        line = nl != NULL ? nl + 1 : NULL;
    }
    if (!p->has_magic || !p->has_kind || !p->has_id || !p->has_epoch || !p->has_check ||
        !p->has_value) {
        return cf_err_set(CF_E_PARSE, errstr, errstr_size,
                          "%s: incomplete key file (needs confide-key-v2, kind, id, epoch, check "
                          "and secret/public)",
                          path);
    }
    return CF_OK;
}

static size_t expected_len(const parsed *p)
{
    const char *k = p->kind;
    size_t seeds = p->parties == 0 ? 0 : (size_t)(p->parties - 1) * CF_KEY_SEED_LEN;
    if (strcmp(k, CF_KEY_KIND_GATEWAY) == 0) {
        return p->parties == 0 ? 0 : CF_KEY_MAC_LEN + seeds;
    }
    if (strcmp(k, CF_KEY_KIND_AUDITOR) == 0) {
        return seeds;
    }
    if (strcmp(k, CF_KEY_KIND_COMBINER) == 0) {
        return CF_KEY_MAC_LEN;
    }
    if (strcmp(k, CF_KEY_KIND_PARTY) == 0) {
        return CF_KEY_SEED_LEN;
    }
    if (strcmp(k, CF_KEY_KIND_PSEUDONYM) == 0 || strcmp(k, CF_KEY_KIND_DATA) == 0) {
        return CF_KEY_SYM_LEN;
    }
    if (strcmp(k, CF_KEY_KIND_SIGNING) == 0 || strcmp(k, CF_KEY_KIND_RESULTS) == 0 ||
        strcmp(k, CF_KEY_KIND_WITNESS) == 0) {
        return CF_KEY_SIGN_SK_LEN;
    }
    if (kind_is_public(k)) {
        return CF_KEY_SIGN_PK_LEN;
    }
    return 0;
}

static cf_err load_impl(const char *dir, const char *name, const char *want_kind, cf_key **out,
                        char *errstr, size_t errstr_size)
{
    char path[4096];
    char *text = NULL;
    size_t tlen = 0;
    cf_key *k = NULL;
    cf_err err = CF_OK;
    parsed p;

    CF_ASSERT(out != NULL);
    *out = NULL;
    if (dir == NULL || name == NULL || want_kind == NULL) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "key directory and name are required");
    }
    if (cf_init() != CF_OK) {
        return cf_err_set(CF_E_CRYPTO, errstr, errstr_size, "libsodium initialization failed");
    }
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path)) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "key path too long");
    }
    bool pub = kind_is_public(want_kind);
    err = read_keyfile(path, pub, &text, &tlen, errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    err = parse_keyfile(path, text, &p, errstr, errstr_size);
    if (err != CF_OK) {
        goto fail;
    }
    if (strcmp(p.kind, want_kind) != 0) {
        err = cf_err_set(CF_E_INVAL, errstr, errstr_size,
                         "key file %s holds a '%s' key where a '%s' key is expected", path, p.kind,
                         want_kind);
        goto fail;
    }
    if (p.value_public != pub) {
        err = cf_err_set(CF_E_PARSE, errstr, errstr_size, "key file %s: %s key must carry '%s='",
                         path, p.kind, pub ? "public" : "secret");
        goto fail;
    }
    size_t want_len = expected_len(&p);
    if (want_len == 0 || p.hexlen != 2 * want_len) {
        err = cf_err_set(CF_E_PARSE, errstr, errstr_size,
                         "key file %s: key material has the wrong length for kind '%s'", path,
                         p.kind);
        goto fail;
    }
    k = cf_calloc(1, sizeof(*k));
    if (k == NULL) {
        err = CF_E_NOMEM;
        goto fail;
    }
    k->bytes = sodium_malloc(want_len);
    if (k->bytes == NULL) {
        err = CF_E_NOMEM;
        goto fail;
    }
    k->len = want_len;
    snprintf(k->kind, sizeof(k->kind), "%s", p.kind);
    size_t bl = 0;
    if (sodium_hex2bin(k->bytes, want_len, p.hex, p.hexlen, NULL, &bl, NULL) != 0 ||
        bl != want_len) {
        err = cf_err_set(CF_E_PARSE, errstr, errstr_size, "key file %s: bad hex in key material",
                         path);
        goto fail;
    }
    uint8_t check[CHECK_LEN];
    key_check(p.kind, p.id, k->bytes, k->len, check);
    if (sodium_memcmp(check, p.check, CHECK_LEN) != 0) {
        err = cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                         "key file %s: the check does not match the key material and id (corrupt "
                         "or edited file)",
                         path);
        goto fail;
    }
    if (strcmp(p.kind, CF_KEY_KIND_SIGNING) == 0 || strcmp(p.kind, CF_KEY_KIND_RESULTS) == 0 ||
        strcmp(p.kind, CF_KEY_KIND_WITNESS) == 0) {
        uint8_t pk[CF_KEY_SIGN_PK_LEN];
        crypto_sign_ed25519_sk_to_pk(pk, k->bytes);
        if (sodium_memcmp(pk, k->bytes + 32, CF_KEY_SIGN_PK_LEN) != 0) {
            err = cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                             "key file %s: inconsistent Ed25519 secret key", path);
            goto fail;
        }
    }
    k->parties = p.parties;
    memcpy(k->id, p.id, CF_KEY_ID_LEN);
    k->epoch = p.epoch;
    /* The party index has no field in cf_key; cf_key_load_party checks it via the name. */
    if (strcmp(p.kind, CF_KEY_KIND_PARTY) == 0) {
        char want[32];
        snprintf(want, sizeof(want), "party-%u.key", (unsigned)p.party);
        const char *base = strrchr(name, '/');
        base = base != NULL ? base + 1 : name;
        if (p.party == 0 || (strncmp(base, "party-", 6) == 0 && strcmp(base, want) != 0)) {
            err = cf_err_set(CF_E_INVAL, errstr, errstr_size,
                             "key file %s records party %u, which does not match its name", path,
                             (unsigned)p.party);
            goto fail;
        }
    }
    sodium_memzero(text, KEYFILE_MAX);
    sodium_free(text);
    *out = k;
    return CF_OK;
fail:
    sodium_memzero(text, KEYFILE_MAX);
    sodium_free(text);
    cf_key_destroy(k);
    return err;
}

cf_err cf_key_load(const char *dir, const char *name, cf_key **out, char *errstr,
                   size_t errstr_size)
{
    const char *kind = name != NULL ? kind_for_name(name) : NULL;
    if (kind == NULL) {
        if (out != NULL) {
            *out = NULL;
        }
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "unknown key file name '%s' (expected gateway.key, party-<i>.key, "
                          "combiner.key, auditor.key, pseudonym.key, data.key, signing.key, "
                          "signing.pub, results.key or results.pub)",
                          name != NULL ? name : "(null)");
    }
    return load_impl(dir, name, kind, out, errstr, errstr_size);
}

cf_err cf_key_load_kind(const char *dir, const char *name, const char *kind, cf_key **out,
                        char *errstr, size_t errstr_size)
{
    return load_impl(dir, name, kind, out, errstr, errstr_size);
}

cf_err cf_key_load_party(const char *dir, unsigned party, cf_key **out, char *errstr,
                         size_t errstr_size)
{
    char name[32];
    if (party < 1 || party >= CF_KEY_PARTIES_MAX) {
        *out = NULL;
        return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                          "party %u has no key file (party 0 has no seed; parties are 0..%d)",
                          party, CF_KEY_PARTIES_MAX - 1);
    }
    snprintf(name, sizeof(name), "party-%u.key", party);
    return load_impl(dir, name, CF_KEY_KIND_PARTY, out, errstr, errstr_size);
}

cf_err cf_key_load_signing_pub(const char *dir, uint8_t pk[CF_KEY_SIGN_PK_LEN],
                               uint8_t id[CF_KEY_ID_LEN], uint32_t *epoch, char *errstr,
                               size_t errstr_size)
{
    cf_key *k = NULL;
    cf_err err = load_impl(dir, "signing.pub", CF_KEY_KIND_SIGNING_PUB, &k, errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    memcpy(pk, k->bytes, CF_KEY_SIGN_PK_LEN);
    if (id != NULL) {
        memcpy(id, k->id, CF_KEY_ID_LEN);
    }
    if (epoch != NULL) {
        *epoch = k->epoch;
    }
    cf_key_destroy(k);
    return CF_OK;
}

static bool is_kind(const cf_key *k, const char *kind)
{
    return k != NULL && k->bytes != NULL && strcmp(k->kind, kind) == 0;
}

unsigned cf_key_parties(const cf_key *k)
{
    return is_kind(k, CF_KEY_KIND_GATEWAY) || is_kind(k, CF_KEY_KIND_AUDITOR) ? k->parties : 0;
}

const uint8_t *cf_key_mac_master(const cf_key *k)
{
    return is_kind(k, CF_KEY_KIND_GATEWAY) || is_kind(k, CF_KEY_KIND_COMBINER) ? k->bytes : NULL;
}

const uint8_t *cf_key_seed(const cf_key *k, unsigned party)
{
    if (is_kind(k, CF_KEY_KIND_PARTY)) {
        return k->len == CF_KEY_SEED_LEN ? k->bytes : NULL;
    }
    size_t off = is_kind(k, CF_KEY_KIND_GATEWAY) ? CF_KEY_MAC_LEN : 0;
    if (cf_key_parties(k) == 0 || party < 1 || party >= cf_key_parties(k)) {
        return NULL;
    }
    return k->bytes + off + (size_t)(party - 1) * CF_KEY_SEED_LEN;
}

cf_err cf_keys_generate_witness(const char *dir, char *errstr, size_t errstr_size)
{
    if (cf_init() != CF_OK) {
        return cf_err_set(CF_E_CRYPTO, errstr, errstr_size, "libsodium initialization failed");
    }
    cf_err err = prepare_dir(dir, errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    char path[4096];
    struct stat st;
    snprintf(path, sizeof(path), "%s/witness.key", dir);
    if (lstat(path, &st) == 0) {
        return cf_err_set(CF_E_STATE, errstr, errstr_size,
                          "%s already exists; refusing to overwrite a witness key", path);
    }
    uint8_t *sk = sodium_malloc(CF_KEY_SIGN_SK_LEN);
    uint8_t pk[CF_KEY_SIGN_PK_LEN], id[CF_KEY_ID_LEN];
    if (sk == NULL) {
        return CF_E_NOMEM;
    }
    randombytes_buf(id, sizeof(id));
    crypto_sign_keypair(pk, sk);
    err = write_key(dir, "witness.key", CF_KEY_KIND_WITNESS, id, 1, 0, 0, sk, CF_KEY_SIGN_SK_LEN,
                    errstr, errstr_size);
    if (err == CF_OK) {
        err = write_key(dir, "witness.pub", CF_KEY_KIND_WITNESS_PUB, id, 1, 0, 0, pk,
                        CF_KEY_SIGN_PK_LEN, errstr, errstr_size);
    }
    sodium_memzero(sk, CF_KEY_SIGN_SK_LEN);
    sodium_free(sk);
    return err;
}

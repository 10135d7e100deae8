/*
 * Key files: generation, atomic writing, loading with permission checks.
 *
 * Format (docs/security.md): a small line-oriented text file, "name=value" per line,
 * '#' comments, first non-comment line "confide-key-v1". Secrets travel from the generator
 * to disk and from disk to cf_key.bytes only through sodium_malloc'd buffers that are wiped
 * before they are freed; the file is read into such a buffer too because it holds the hex.
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
#define FIELD_P ((UINT64_C(1) << 61) - 1)
#define ID_DOMAIN "confide-key-id"

void cf_key_id_hex(const uint8_t id[CF_KEY_ID_LEN], char out[2 * CF_KEY_ID_LEN + 1])
{
    sodium_bin2hex(out, 2 * CF_KEY_ID_LEN + 1, id, CF_KEY_ID_LEN);
}

void cf_key_id_compute(const char *kind, const uint8_t *material, size_t len,
                       uint8_t id[CF_KEY_ID_LEN])
{
    crypto_generichash_state st;
    uint8_t h[32];
    crypto_generichash_init(&st, NULL, 0, sizeof(h));
    crypto_generichash_update(&st, (const uint8_t *)ID_DOMAIN, strlen(ID_DOMAIN));
    crypto_generichash_update(&st, (const uint8_t *)kind, strlen(kind));
    crypto_generichash_update(&st, material, len);
    crypto_generichash_final(&st, h, sizeof(h));
    memcpy(id, h, CF_KEY_ID_LEN);
    sodium_memzero(&st, sizeof(st));
}

/* The kind a standard file name must hold; NULL for names outside the layout. */
static const char *kind_for_name(const char *name)
{
    if (strcmp(name, "gateway.key") == 0) {
        return CF_KEY_KIND_GATEWAY;
    }
    if (strcmp(name, "combiner.key") == 0) {
        return CF_KEY_KIND_COMBINER;
    }
    if (strcmp(name, "pseudonym.key") == 0) {
        return CF_KEY_KIND_PSEUDONYM;
    }
    if (strcmp(name, "data.key") == 0) {
        return CF_KEY_KIND_DATA;
    }
    if (strcmp(name, "signing.key") == 0) {
        return CF_KEY_KIND_SIGNING;
    }
    if (strcmp(name, "signing.pub") == 0) {
        return CF_KEY_KIND_SIGNING_PUB;
    }
    if (strncmp(name, "party-", 6) == 0) {
        return CF_KEY_KIND_PARTY;
    }
    return NULL;
}

static bool kind_is_public(const char *kind)
{
    return strcmp(kind, CF_KEY_KIND_SIGNING_PUB) == 0;
}

/* The kind hashed into the id: signing.key and signing.pub share theirs. */
static const char *id_kind(const char *kind)
{
    return kind_is_public(kind) ? CF_KEY_KIND_SIGNING : kind;
}

/* Material the id is computed over: the public part when there is one. */
static void key_id_of(const char *kind, const uint8_t *bytes, size_t len, uint8_t id[CF_KEY_ID_LEN])
{
    if (strcmp(kind, CF_KEY_KIND_SIGNING) == 0 && len == CF_KEY_SIGN_SK_LEN) {
        cf_key_id_compute(CF_KEY_KIND_SIGNING, bytes + 32, CF_KEY_SIGN_PK_LEN, id);
    } else {
        cf_key_id_compute(id_kind(kind), bytes, len, id);
    }
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
static cf_err write_key(const char *dir, const char *name, const char *kind, uint32_t epoch,
                        unsigned parties, unsigned party, const uint8_t *bytes, size_t len,
                        char *errstr, size_t errstr_size)
{
    bool pub = kind_is_public(kind);
    uint8_t id[CF_KEY_ID_LEN];
    char idhex[2 * CF_KEY_ID_LEN + 1];
    key_id_of(kind, bytes, len, id);
    cf_key_id_hex(id, idhex);

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
                     "confide-key-v1\nkind=%s\nid=%s\nepoch=%u\n",
                     kind, pub ? "" : " SECRET: keep mode 0600, never share, copy or log.", kind,
                     idhex, (unsigned)epoch);
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

/* Uniform nonzero element of Z_p by rejection sampling 61-bit values. */
static uint64_t random_alpha(void)
{
    for (;;) {
        uint64_t x;
        randombytes_buf(&x, sizeof(x));
        x &= FIELD_P;
        if (x != 0 && x != FIELD_P) {
            return x;
        }
    }
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

cf_err cf_keys_generate(const char *dir, unsigned parties, uint32_t epoch, int force, char *errstr,
                        size_t errstr_size)
{
    enum { NAMES_MAX = 6 + CF_KEY_PARTIES_MAX };
    char names[NAMES_MAX][32];
    unsigned nn = 0;
    uint8_t *buf = NULL;
    size_t mac_len = CF_KEY_ALPHA_LEN + (size_t)(CF_KEY_PARTIES_MAX - 1) * CF_KEY_SEED_LEN;
    /* one secure buffer for every secret: mac block | pseudonym | data | signing sk */
    size_t total = mac_len + 2 * CF_KEY_SYM_LEN + CF_KEY_SIGN_SK_LEN;
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
    const char *fixed[] = {"gateway.key", "combiner.key", "pseudonym.key",
                           "data.key",    "signing.key",  "signing.pub"};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        snprintf(names[nn++], sizeof(names[0]), "%s", fixed[i]);
    }
    for (unsigned i = 1; i < parties; i++) {
        snprintf(names[nn++], sizeof(names[0]), "party-%u.key", i);
    }
    /* Check every file before writing any, so a refused run changes nothing. */
    if (!force) {
        for (unsigned i = 0; i < nn; i++) {
            char path[4096];
            struct stat st;
            snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
            if (lstat(path, &st) == 0) {
                return cf_err_set(CF_E_STATE, errstr, errstr_size,
                                  "%s already exists; refusing to overwrite keys (use --force "
                                  "to replace them, see docs/security.md on rotation)",
                                  path);
            }
        }
    }
    buf = sodium_malloc(total);
    if (buf == NULL) {
        return cf_err_set(CF_E_NOMEM, errstr, errstr_size, "sodium_malloc failed");
    }
    uint8_t *mac = buf;
    uint8_t *pseudo = mac + mac_len;
    uint8_t *data = pseudo + CF_KEY_SYM_LEN;
    uint8_t *sk = data + CF_KEY_SYM_LEN;
    uint8_t pk[CF_KEY_SIGN_PK_LEN];
    uint64_t alpha = random_alpha();
    for (int i = 0; i < 8; i++) {
        mac[i] = (uint8_t)(alpha >> (8 * i));
    }
    alpha = 0;
    size_t mac_used = CF_KEY_ALPHA_LEN + (size_t)(parties - 1) * CF_KEY_SEED_LEN;
    randombytes_buf(mac + CF_KEY_ALPHA_LEN, (size_t)(parties - 1) * CF_KEY_SEED_LEN);
    randombytes_buf(pseudo, CF_KEY_SYM_LEN);
    randombytes_buf(data, CF_KEY_SYM_LEN);
    if (crypto_sign_keypair(pk, sk) != 0) {
        err = cf_err_set(CF_E_CRYPTO, errstr, errstr_size, "Ed25519 key generation failed");
        goto done;
    }
    /* Public key last: its presence marks a complete generation. */
    err = write_key(dir, "gateway.key", CF_KEY_KIND_GATEWAY, epoch, parties, 0, mac, mac_used,
                    errstr, errstr_size);
    if (err == CF_OK) {
        /* alpha only: with the seeds, a combiner colluding with party 0 would see amounts */
        err = write_key(dir, "combiner.key", CF_KEY_KIND_COMBINER, epoch, parties, 0, mac,
                        CF_KEY_ALPHA_LEN, errstr, errstr_size);
    }
    for (unsigned i = 1; err == CF_OK && i < parties; i++) {
        char name[32];
        snprintf(name, sizeof(name), "party-%u.key", i);
        err = write_key(dir, name, CF_KEY_KIND_PARTY, epoch, parties, i,
                        mac + CF_KEY_ALPHA_LEN + (size_t)(i - 1) * CF_KEY_SEED_LEN, CF_KEY_SEED_LEN,
                        errstr, errstr_size);
    }
    if (err == CF_OK) {
        err = write_key(dir, "pseudonym.key", CF_KEY_KIND_PSEUDONYM, epoch, 0, 0, pseudo,
                        CF_KEY_SYM_LEN, errstr, errstr_size);
    }
    if (err == CF_OK) {
        err = write_key(dir, "data.key", CF_KEY_KIND_DATA, epoch, 0, 0, data, CF_KEY_SYM_LEN,
                        errstr, errstr_size);
    }
    if (err == CF_OK) {
        err = write_key(dir, "signing.key", CF_KEY_KIND_SIGNING, epoch, 0, 0, sk,
                        CF_KEY_SIGN_SK_LEN, errstr, errstr_size);
    }
    if (err == CF_OK) {
        err = write_key(dir, "signing.pub", CF_KEY_KIND_SIGNING_PUB, epoch, 0, 0, pk,
                        CF_KEY_SIGN_PK_LEN, errstr, errstr_size);
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
    const char *hex; /* points into the secure text buffer */
    size_t hexlen;
    bool has_magic, has_kind, has_id, has_epoch, has_value, value_public;
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
            if (strcmp(line, "confide-key-v1") != 0) {
                return cf_err_set(CF_E_PARSE, errstr, errstr_size,
                                  "%s: not a confide key file (line %u: expected "
                                  "\"confide-key-v1\")",
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
    if (!p->has_magic || !p->has_kind || !p->has_id || !p->has_epoch || !p->has_value) {
        return cf_err_set(CF_E_PARSE, errstr, errstr_size,
                          "%s: incomplete key file (needs confide-key-v1, kind, id, epoch and "
                          "secret/public)",
                          path);
    }
    return CF_OK;
}

static size_t expected_len(const parsed *p)
{
    const char *k = p->kind;
    if (strcmp(k, CF_KEY_KIND_GATEWAY) == 0) {
        return p->parties == 0 ? 0 : CF_KEY_ALPHA_LEN + (size_t)(p->parties - 1) * CF_KEY_SEED_LEN;
    }
    if (strcmp(k, CF_KEY_KIND_COMBINER) == 0) {
        return CF_KEY_ALPHA_LEN;
    }
    if (strcmp(k, CF_KEY_KIND_PARTY) == 0) {
        return CF_KEY_SEED_LEN;
    }
    if (strcmp(k, CF_KEY_KIND_PSEUDONYM) == 0 || strcmp(k, CF_KEY_KIND_DATA) == 0) {
        return CF_KEY_SYM_LEN;
    }
    if (strcmp(k, CF_KEY_KIND_SIGNING) == 0) {
        return CF_KEY_SIGN_SK_LEN;
    }
    if (strcmp(k, CF_KEY_KIND_SIGNING_PUB) == 0) {
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
    uint8_t id[CF_KEY_ID_LEN];
    key_id_of(p.kind, k->bytes, k->len, id);
    if (sodium_memcmp(id, p.id, CF_KEY_ID_LEN) != 0) {
        err = cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                         "key file %s: key id does not match the key material (corrupt or "
                         "edited file)",
                         path);
        goto fail;
    }
    if (strcmp(p.kind, CF_KEY_KIND_GATEWAY) == 0 || strcmp(p.kind, CF_KEY_KIND_COMBINER) == 0) {
        uint64_t a = cf_key_alpha(k);
        if (a == 0 || a >= ((UINT64_C(1) << 61) - 1)) {
            err = cf_err_set(CF_E_CORRUPT, errstr, errstr_size, "key file %s: MAC key out of range",
                             path);
            goto fail;
        }
    }
    if (strcmp(p.kind, CF_KEY_KIND_SIGNING) == 0) {
        uint8_t pk[CF_KEY_SIGN_PK_LEN];
        crypto_sign_ed25519_sk_to_pk(pk, k->bytes);
        if (sodium_memcmp(pk, k->bytes + 32, CF_KEY_SIGN_PK_LEN) != 0) {
            err = cf_err_set(CF_E_CORRUPT, errstr, errstr_size,
                             "key file %s: inconsistent Ed25519 secret key", path);
            goto fail;
        }
    }
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
                          "combiner.key, pseudonym.key, data.key, signing.key or signing.pub)",
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

static bool has_mac_layout(const cf_key *k)
{
    if (k == NULL || k->bytes == NULL) {
        return false;
    }
    if (strcmp(k->kind, CF_KEY_KIND_COMBINER) == 0) {
        return k->len == CF_KEY_ALPHA_LEN;
    }
    return strcmp(k->kind, CF_KEY_KIND_GATEWAY) == 0 && k->len >= CF_KEY_ALPHA_LEN &&
           (k->len - CF_KEY_ALPHA_LEN) % CF_KEY_SEED_LEN == 0;
}

unsigned cf_key_parties(const cf_key *k)
{
    if (!has_mac_layout(k) || strcmp(k->kind, CF_KEY_KIND_GATEWAY) != 0) {
        return 0;
    }
    return 1 + (unsigned)((k->len - CF_KEY_ALPHA_LEN) / CF_KEY_SEED_LEN);
}

uint64_t cf_key_alpha(const cf_key *k)
{
    if (!has_mac_layout(k)) {
        return 0;
    }
    uint64_t a = 0;
    for (int i = 7; i >= 0; i--) {
        a = (a << 8) | k->bytes[i];
    }
    return a;
}

const uint8_t *cf_key_seed(const cf_key *k, unsigned party)
{
    if (k == NULL || k->bytes == NULL) {
        return NULL;
    }
    if (strcmp(k->kind, CF_KEY_KIND_PARTY) == 0) {
        return k->len == CF_KEY_SEED_LEN ? k->bytes : NULL;
    }
    if (!has_mac_layout(k) || party < 1 || party >= cf_key_parties(k)) {
        return NULL;
    }
    return k->bytes + CF_KEY_ALPHA_LEN + (size_t)(party - 1) * CF_KEY_SEED_LEN;
}

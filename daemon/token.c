/* Tokens, public ids and keyed hashes: see token.h.
 *
 * Everything random comes from randombytes_buf() and everything keyed from
 * libsodium, so there is no hand-written cryptography here. New tokens are
 * taken from a per-thread buffer of TOKEN_RANDOM_BUFFER random bytes that
 * randombytes_buf() fills (one getrandom(2) for 128 tokens instead of one
 * per Create, a syscall that showed in the profile of Create): bytes are
 * wiped as they are used, and a forked child wipes what it inherited, so
 * that no two processes hand out the same token. The key file is
 * written to a temporary file (O_EXCL, 0600), synced, then linked to its
 * final name: link(2) fails if the name exists, so two daemons racing on a
 * first start cannot both win, and a crash never leaves a half-written key
 * under the real name.
 */
#include "token.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"

int token_init(void) {
        return sodium_init() < 0 ? -EIO : 0;
}

void token_key_from_bytes(struct token_key *k, const uint8_t bytes[TOKEN_KEY_BYTES]) {
        static const char fp_label[] = "sessiond fingerprint key", id_label[] = "sessiond session id key";

        memcpy(k->hash_key, bytes, TOKEN_KEY_BYTES);
        crypto_generichash(k->fp_key, sizeof k->fp_key, (const unsigned char *) fp_label, sizeof fp_label - 1, bytes,
                           TOKEN_KEY_BYTES);
        crypto_generichash(k->id_key, sizeof k->id_key, (const unsigned char *) id_label, sizeof id_label - 1, bytes,
                           TOKEN_KEY_BYTES);
}

int token_key_random(struct token_key *k) {
        uint8_t bytes[TOKEN_KEY_BYTES];

        randombytes_buf(bytes, sizeof bytes);
        token_key_from_bytes(k, bytes);
        sodium_memzero(bytes, sizeof bytes);
        return 0;
}

/* Cleanups that wipe the key's bytes on every way out of a function. */
static void key_read_bytes_wipe(uint8_t (*b)[TOKEN_KEY_BYTES + 1]) {
        sodium_memzero(*b, sizeof *b);
}

static void key_bytes_wipe(uint8_t (*b)[TOKEN_KEY_BYTES]) {
        sodium_memzero(*b, sizeof *b);
}

static int key_read(const char *path, struct token_key *k) {
        _cleanup_(key_read_bytes_wipe) uint8_t bytes[TOKEN_KEY_BYTES + 1];
        _cleanup_close_ int fd = -1;
        struct stat st;
        ssize_t n;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return log_error_errno(-errno, "Failed to stat key file %s: %m", path);
        if (!S_ISREG(st.st_mode)) {
                log_error("Key file %s is not a regular file; refusing to use it.", path);
                return -EINVAL;
        }
        if (st.st_mode & (S_IRWXG | S_IRWXO)) {
                log_error("Key file %s is accessible by group or others (mode %04o); "
                          "it must be 0600. Refusing to use it.",
                          path, (unsigned) (st.st_mode & 07777));
                return -EPERM;
        }
        n = read(fd, bytes, sizeof bytes);
        if (n < 0)
                return log_error_errno(-errno, "Failed to read key file %s: %m", path);
        if (n != TOKEN_KEY_BYTES) {
                if (n > TOKEN_KEY_BYTES)
                        log_error("Key file %s is larger than %d bytes; refusing to use it.", path, TOKEN_KEY_BYTES);
                else
                        log_error("Key file %s has the wrong size (%zd bytes, expected %d); refusing to use it.", path,
                                  n, TOKEN_KEY_BYTES);
                return -EINVAL;
        }
        token_key_from_bytes(k, bytes);
        return 0;
}

/* The folder of path and its last component: "/a/b.key" -> "/a", "b.key";
 * "b.key" -> ".", "b.key". */
static int path_split(const char *path, char *dir, size_t size, const char **base) {
        const char *slash = strrchr(path, '/');
        size_t len;

        if (!slash) {
                *base = path;
                return (size_t) snprintf(dir, size, ".") >= size ? -ENAMETOOLONG : 0;
        }
        *base = slash + 1;
        len = slash == path ? 1 : (size_t) (slash - path);
        if (len >= size)
                return -ENAMETOOLONG;
        memcpy(dir, path, len);
        dir[len] = '\0';
        return 0;
}

/* Writes a new key to a temporary file beside path and links it into place
 * (EEXIST: somebody else made it first; the caller uses theirs). */
static int key_create(const char *path) {
        char dir[PATH_MAX], tmp[PATH_MAX];
        _cleanup_(key_bytes_wipe) uint8_t bytes[TOKEN_KEY_BYTES];
        _cleanup_close_ int fd = -1;
        const char *base;
        int r, dfd;

        if (path_split(path, dir, sizeof dir, &base) < 0 ||
            (size_t) snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", dir, base) >= sizeof tmp)
                return -ENAMETOOLONG;
        fd = mkostemp(tmp, O_CLOEXEC); /* O_EXCL, mode 0600 */
        if (fd < 0)
                return log_error_errno(-errno, "Failed to create key file in %s: %m", dir);
        randombytes_buf(bytes, sizeof bytes);
        errno = 0;
        if (fchmod(fd, 0600) < 0 || write(fd, bytes, sizeof bytes) != (ssize_t) sizeof bytes || fsync(fd) < 0) {
                r = log_error_errno(errno ? -errno : -EIO, "Failed to write key file %s: %m", tmp);
                unlink(tmp);
                return r;
        }
        close(TAKE_FD(fd));
        r = link(tmp, path) < 0 ? -errno : 0;
        unlink(tmp);
        if (r == -EEXIST)
                return r;
        if (r < 0)
                return log_error_errno(r, "Failed to create key file %s: %m", path);
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
                (void) fsync(dfd);
                close(dfd);
        }
        return 0;
}

int token_key_load(const char *path, bool create, struct token_key *k, bool *created) {
        int r;

        assert(path && k);
        if (created)
                *created = false;
        if (!*path || path[strlen(path) - 1] == '/') {
                log_error("Key file \"%s\" is not a file name.", path);
                return -EINVAL;
        }

        r = key_read(path, k);
        if (r != -ENOENT) {
                if (r < 0 && r != -EINVAL && r != -EPERM)
                        log_error_errno(r, "Failed to open key file %s: %m", path);
                return r;
        }
        if (!create) {
                log_error("Key file %s is missing.", path);
                return -ENOENT;
        }
        r = key_create(path);
        if (r < 0 && r != -EEXIST)
                return r;
        if (created && r == 0)
                *created = true;
        return key_read(path, k);
}

#define TOKEN_RANDOM_BUFFER (128 * TOKEN_BYTES)

static _Thread_local uint8_t random_buffer[TOKEN_RANDOM_BUFFER];
static _Thread_local size_t random_used = TOKEN_RANDOM_BUFFER; /* bytes taken (and wiped) */
static pthread_once_t random_once = PTHREAD_ONCE_INIT;

static void random_forked(void) {
        sodium_memzero(random_buffer, sizeof random_buffer);
        random_used = TOKEN_RANDOM_BUFFER;
}

static void random_setup(void) {
        (void) pthread_atfork(NULL, NULL, random_forked);
}

static void random_take(uint8_t *out, size_t n) {
        assert(n <= TOKEN_RANDOM_BUFFER);
        if (random_used + n > TOKEN_RANDOM_BUFFER) {
                (void) pthread_once(&random_once, random_setup);
                randombytes_buf(random_buffer, sizeof random_buffer);
                random_used = 0;
        }
        memcpy(out, random_buffer + random_used, n);
        sodium_memzero(random_buffer + random_used, n);
        random_used += n;
}

void token_new(char out[TOKEN_STRING_LEN + 1]) {
        uint8_t bytes[TOKEN_BYTES];

        random_take(bytes, sizeof bytes);
        sodium_bin2base64(out, TOKEN_STRING_LEN + 1, bytes, sizeof bytes, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        sodium_memzero(bytes, sizeof bytes);
}

static bool is_base64url(char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

bool token_is_wellformed(const char *s) {
        size_t i;

        if (!s)
                return false;
        for (i = 0; i < TOKEN_STRING_LEN; i++)
                if (!is_base64url(s[i]))
                        return false;
        return s[i] == '\0';
}

void token_hash(const struct token_key *k, const char *token, uint8_t out[TOKEN_HASH_BYTES]) {
        crypto_generichash(out, TOKEN_HASH_BYTES, (const unsigned char *) token, strlen(token), k->hash_key,
                           sizeof k->hash_key);
}

void token_key_check(const struct token_key *k, char out[TOKEN_KEY_CHECK_LEN + 1]) {
        static const char text[] = "sessiond key check 1";
        uint8_t h[TOKEN_KEY_CHECK_LEN / 2];
        uint8_t ks[TOKEN_KEY_BYTES + 32];

        /* Every part of the key, so that a key that differs anywhere differs here. */
        memcpy(ks, k->hash_key, TOKEN_KEY_BYTES);
        memcpy(ks + TOKEN_KEY_BYTES, k->fp_key, 16);
        memcpy(ks + TOKEN_KEY_BYTES + 16, k->id_key, 16);
        crypto_generichash(h, sizeof h, (const unsigned char *) text, sizeof text - 1, ks,
                           crypto_generichash_KEYBYTES_MAX);
        sodium_bin2hex(out, TOKEN_KEY_CHECK_LEN + 1, h, sizeof h);
        sodium_memzero(ks, sizeof ks);
}

void token_id_derive(const struct token_key *k, uint32_t created_at, int64_t row_key, uint8_t id[TOKEN_ID_BYTES]) {
        uint8_t in[8], out[crypto_shorthash_siphashx24_BYTES];

        for (int i = 0; i < 8; i++)
                in[i] = (uint8_t) ((uint64_t) row_key >> (56 - 8 * i));
        crypto_shorthash_siphashx24(out, in, sizeof in, k->id_key);
        for (int i = 0; i < 4; i++)
                id[i] = (uint8_t) (created_at >> (24 - 8 * i));
        memcpy(id + 4, out, TOKEN_ID_BYTES - 4);
}

void token_id_format(const uint8_t id[TOKEN_ID_BYTES], char out[TOKEN_ID_STRING_LEN + 1]) {
        sodium_bin2base64(out, TOKEN_ID_STRING_LEN + 1, id, TOKEN_ID_BYTES, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

int token_id_parse(const char *s, uint8_t id[TOKEN_ID_BYTES]) {
        size_t len = 0;

        if (!s || strlen(s) != TOKEN_ID_STRING_LEN)
                return -EINVAL;
        if (sodium_base642bin(id, TOKEN_ID_BYTES, s, TOKEN_ID_STRING_LEN, NULL, &len, NULL,
                              sodium_base64_VARIANT_URLSAFE_NO_PADDING) < 0 ||
            len != TOKEN_ID_BYTES)
                return -EINVAL;
        return 0;
}

uint64_t token_fingerprint(const struct token_key *k, const char *value) {
        uint8_t out[crypto_shorthash_BYTES];
        uint64_t v;

        crypto_shorthash(out, (const unsigned char *) value, strlen(value), k->fp_key);
        memcpy(&v, out, sizeof v);
        return v ? v : 1;
}

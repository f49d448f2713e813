/* Tokens, public session ids and keyed hashing.
 *
 * A token is the bearer secret of a session (the application's cookie
 * value): 256 bits from libsodium's CSPRNG, written as base64url without
 * padding (43 characters). The daemon never stores a token: it stores a
 * keyed BLAKE2b-256 hash of it (crypto_generichash), so that a copy of the
 * database does not hand out live sessions. The 32-byte key lives in
 * daemon.key_file, by default `sessiond.key` next to the database, created
 * 0600 on first start and refused later if it has the wrong size or is
 * accessible by anybody but its owner. Without persistence the key is
 * random and lives in memory only.
 *
 * A session also has a public id (16 bytes, 22 base64url characters),
 * unrelated to the token, for listings, audit rows and operators. It is
 * derived, not stored in memory: its creation time (4 bytes, big-endian)
 * followed by 12 bytes of keyed SipHash-128 of its row number. Without the
 * key it looks random and cannot be guessed; with it the engine recomputes
 * it from what it keeps anyway, which saves 16 bytes per session in memory.
 * Ids made in the same second share their beginning, so that inserting
 * them touches the end of the id index rather than a random page of it
 * (the creation time is public in SessionInfo anyway).
 *
 * Fingerprints (user agent, IP, Accept-Language, Accept-Encoding) are keyed
 * SipHash-2-4 values (crypto_shorthash) under a subkey derived from the same
 * key: they only have to tell "same" from "changed", and must not let anyone
 * with the database test guesses of an IP address.
 *
 * Functions return 0 or a negative errno.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOKEN_BYTES 32
#define TOKEN_STRING_LEN 43 /* base64url of 32 bytes, no padding */
#define TOKEN_HASH_BYTES 32
#define TOKEN_ID_BYTES 16
#define TOKEN_ID_STRING_LEN 22
#define TOKEN_KEY_BYTES 32
#define TOKEN_KEY_FILE "sessiond.key"

struct token_key {
        uint8_t hash_key[TOKEN_KEY_BYTES]; /* BLAKE2b key for token hashes */
        uint8_t fp_key[16];                /* SipHash key for fingerprints */
        uint8_t id_key[16];                /* SipHash-128 key for session ids */
};

/* A check value of the key (hex, TOKEN_KEY_CHECK_LEN characters): a keyed
 * hash of a fixed text, which says whether two daemons hold the same key
 * and nothing about the key. A shared store keeps the first daemon's. */
#define TOKEN_KEY_CHECK_LEN 32
void token_key_check(const struct token_key *k, char out[TOKEN_KEY_CHECK_LEN + 1]);

/* Initialises libsodium (idempotent). */
int token_init(void);

/* A key for a store that lives in memory only. */
int token_key_random(struct token_key *k);

/* Reads the key file at `path` (daemon.key_file, or sessiond.key beside
 * the database), or creates it (0600, O_EXCL, fsync, in the same folder)
 * when it is missing and `create` is true. Refuses (with a logged message
 * naming the file) a key file of the wrong size, not a regular file, or
 * accessible by group or others. *created tells whether it was made now. */
int token_key_load(const char *path, bool create, struct token_key *k, bool *created);

/* Derives both halves from the 32 bytes of a key file. */
void token_key_from_bytes(struct token_key *k, const uint8_t bytes[TOKEN_KEY_BYTES]);

/* A new token, NUL-terminated. */
void token_new(char out[TOKEN_STRING_LEN + 1]);

/* True when s has the shape of a token (43 base64url characters). */
bool token_is_wellformed(const char *s);

/* Keyed hash of a token string. */
void token_hash(const struct token_key *k, const char *token, uint8_t out[TOKEN_HASH_BYTES]);

/* The public id of the session created at `created_at` in row `row_key`. */
void token_id_derive(const struct token_key *k, uint32_t created_at, int64_t row_key, uint8_t id[TOKEN_ID_BYTES]);
void token_id_format(const uint8_t id[TOKEN_ID_BYTES], char out[TOKEN_ID_STRING_LEN + 1]);
/* -EINVAL when s is not 22 base64url characters. */
int token_id_parse(const char *s, uint8_t id[TOKEN_ID_BYTES]);

/* Keyed fingerprint of a client value; never 0 (0 means "none recorded"). */
uint64_t token_fingerprint(const struct token_key *k, const char *value);

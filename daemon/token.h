/* Tokens, public session ids and keyed hashing.
 *
 * A token is the bearer secret of a session (the application's cookie
 * value): 256 bits from libsodium's CSPRNG, written as base64url without
 * padding (43 characters). The daemon never stores a token: it stores a
 * keyed BLAKE2b-256 hash of it (crypto_generichash), so that a copy of the
 * database does not hand out live sessions. The 32-byte key lives in
 * `sessiond.key` next to the database, created 0600 on first start and
 * refused later if it has the wrong size or is accessible by anybody but its
 * owner. Without persistence the key is random and lives in memory only.
 *
 * A session also has a public id (16 bytes, 22 base64url characters),
 * unrelated to the token, for listings, audit rows and operators. Like a
 * UUIDv7 it starts with the creation time in milliseconds (48 bits) and
 * ends with 80 random bits: ids made close together sort close together,
 * so that inserting them touches the end of the id index instead of a
 * random page of it for every new session (the creation time is public in
 * SessionInfo anyway).
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
};

/* Initialises libsodium (idempotent). */
int token_init(void);

/* A key for a store that lives in memory only. */
int token_key_random(struct token_key *k);

/* Reads `dir`/sessiond.key, or creates it (0600, O_EXCL, fsync) when it is
 * missing and `create` is true. Refuses (with a logged message naming the
 * file) a key file of the wrong size, not a regular file, or accessible by
 * group or others. *created tells whether it was made now. */
int token_key_load(const char *dir, bool create, struct token_key *k, bool *created);

/* Derives both halves from the 32 bytes of a key file. */
void token_key_from_bytes(struct token_key *k, const uint8_t bytes[TOKEN_KEY_BYTES]);

/* A new token, NUL-terminated. */
void token_new(char out[TOKEN_STRING_LEN + 1]);

/* True when s has the shape of a token (43 base64url characters). */
bool token_is_wellformed(const char *s);

/* Keyed hash of a token string. */
void token_hash(const struct token_key *k, const char *token, uint8_t out[TOKEN_HASH_BYTES]);

/* Public ids: 48 bits of milliseconds since the epoch, 80 random bits. */
void token_id_new(uint8_t id[TOKEN_ID_BYTES]);
void token_id_format(const uint8_t id[TOKEN_ID_BYTES], char out[TOKEN_ID_STRING_LEN + 1]);
/* -EINVAL when s is not 22 base64url characters. */
int token_id_parse(const char *s, uint8_t id[TOKEN_ID_BYTES]);

/* Keyed fingerprint of a client value; never 0 (0 means "none recorded"). */
uint64_t token_fingerprint(const struct token_key *k, const char *value);

/* Tokens, ids, the key file and keyed hashes (daemon/token.c). */
#include <sodium.h>

#include "helpers.h"

START_TEST(test_token_shape) {
        char t[TOKEN_STRING_LEN + 1];

        ck_assert_int_eq(token_init(), 0);
        for (int i = 0; i < 1000; i++) {
                token_new(t);
                ck_assert_uint_eq(strlen(t), TOKEN_STRING_LEN);
                for (size_t k = 0; k < TOKEN_STRING_LEN; k++)
                        ck_assert_msg(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", t[k]),
                                      "character %c of %s is not base64url", t[k], t);
                ck_assert(token_is_wellformed(t));
        }
        ck_assert(!token_is_wellformed(""));
        ck_assert(!token_is_wellformed(NULL));
        ck_assert(!token_is_wellformed("abc"));
        memset(t, 'a', TOKEN_STRING_LEN);
        t[TOKEN_STRING_LEN] = '\0';
        ck_assert(token_is_wellformed(t));
        t[5] = '=';
        ck_assert(!token_is_wellformed(t));
        t[5] = '+';
        ck_assert(!token_is_wellformed(t));
        char longer[TOKEN_STRING_LEN + 2];
        memset(longer, 'a', sizeof longer - 1);
        longer[sizeof longer - 1] = '\0';
        ck_assert(!token_is_wellformed(longer));
}
END_TEST

static int cmp_tokens(const void *a, const void *b) {
        return strcmp(a, b);
}

START_TEST(test_token_unique) {
        enum { N = 20000 };
        char(*t)[TOKEN_STRING_LEN + 1] = calloc(N, sizeof *t);

        ck_assert_ptr_nonnull(t);
        ck_assert_int_eq(token_init(), 0);
        for (int i = 0; i < N; i++)
                token_new(t[i]);
        qsort(t, N, sizeof *t, cmp_tokens);
        for (int i = 1; i < N; i++)
                ck_assert_str_ne(t[i - 1], t[i]);
        free(t);
}
END_TEST

START_TEST(test_key_file_created_and_reused) {
        struct token_key a, b;
        uint8_t ha[TOKEN_HASH_BYTES], hb[TOKEN_HASH_BYTES];
        char *path = path_in(TOKEN_KEY_FILE);
        struct stat st;
        bool created;

        ck_assert_int_eq(token_init(), 0);
        ck_assert_int_eq(token_key_load(path, true, &a, &created), 0);
        ck_assert(created);
        ck_assert_int_eq(stat(path, &st), 0);
        ck_assert_uint_eq(st.st_mode & 07777, 0600);
        ck_assert_int_eq(st.st_size, TOKEN_KEY_BYTES);

        /* A second start reads the same key: hashes are stable. */
        ck_assert_int_eq(token_key_load(path, true, &b, &created), 0);
        ck_assert(!created);
        ck_assert_int_eq(memcmp(&a, &b, sizeof a), 0);
        token_hash(&a, "some-token", ha);
        token_hash(&b, "some-token", hb);
        ck_assert_int_eq(memcmp(ha, hb, sizeof ha), 0);
        ck_assert_uint_eq(token_fingerprint(&a, "Mozilla"), token_fingerprint(&b, "Mozilla"));

        /* No temporary files are left behind. */
        char *cmd = NULL;
        ck_assert_int_ge(asprintf(&cmd, "test $(ls -A '%s' | wc -l) -eq 1", scratch()), 0);
        ck_assert_int_eq(system(cmd), 0);
        free(cmd);
        scratch_remove();
}
END_TEST

/* daemon.key_file: any name in any folder; created there like sessiond.key
 * (its temporary file in the same folder, none left behind). */
START_TEST(test_key_file_elsewhere) {
        struct token_key a, b;
        char *folder = path_in("keys"), *path = path_in("keys/fleet.key");
        bool created;

        ck_assert_int_eq(token_init(), 0);
        ck_assert_int_eq(mkdir(folder, 0700), 0);
        ck_assert_int_eq(token_key_load(path, false, &a, NULL), -ENOENT);
        ck_assert_int_eq(token_key_load(path, true, &a, &created), 0);
        ck_assert(created);
        ck_assert_int_eq(token_key_load(path, false, &b, &created), 0);
        ck_assert(!created);
        ck_assert_int_eq(memcmp(&a, &b, sizeof a), 0);
        char *cmd = NULL;
        ck_assert_int_ge(asprintf(&cmd, "test \"$(ls -A '%s')\" = fleet.key", folder), 0);
        ck_assert_int_eq(system(cmd), 0);
        free(cmd);
        /* Not a file name. */
        ck_assert_int_eq(token_key_load("", true, &a, NULL), -EINVAL);
        ck_assert_int_eq(token_key_load(path_in("keys/"), true, &a, NULL), -EINVAL);
        scratch_remove();
}
END_TEST

START_TEST(test_key_differs_between_stores) {
        struct token_key a, b;
        uint8_t ha[TOKEN_HASH_BYTES], hb[TOKEN_HASH_BYTES];

        ck_assert_int_eq(token_init(), 0);
        token_key_random(&a);
        token_key_random(&b);
        token_hash(&a, "some-token", ha);
        token_hash(&b, "some-token", hb);
        ck_assert_int_ne(memcmp(ha, hb, sizeof ha), 0);
        token_hash(&a, "other-token", hb);
        ck_assert_int_ne(memcmp(ha, hb, sizeof ha), 0);
}
END_TEST

START_TEST(test_key_file_refused) {
        struct token_key k;
        uint8_t bytes[TOKEN_KEY_BYTES] = {1, 2, 3};
        char *path = path_in(TOKEN_KEY_FILE);

        ck_assert_int_eq(token_init(), 0);
        /* Missing, and not allowed to create. */
        ck_assert_int_eq(token_key_load(path, false, &k, NULL), -ENOENT);

        /* Wrong size: short and long. */
        write_file(path, bytes, 16, 0600);
        ck_assert_int_eq(token_key_load(path, true, &k, NULL), -EINVAL);
        write_file(path, bytes, sizeof bytes, 0600);
        ck_assert_int_eq(token_key_load(path, true, &k, NULL), 0);
        unlink(path);
        {
                uint8_t big[TOKEN_KEY_BYTES + 8] = {0};
                write_file(path, big, sizeof big, 0600);
                ck_assert_int_eq(token_key_load(path, true, &k, NULL), -EINVAL);
        }
        /* Readable by others, or by the group. */
        unlink(path);
        write_file(path, bytes, sizeof bytes, 0600);
        ck_assert_int_eq(chmod(path, 0644), 0);
        ck_assert_int_eq(token_key_load(path, true, &k, NULL), -EPERM);
        ck_assert_int_eq(chmod(path, 0640), 0);
        ck_assert_int_eq(token_key_load(path, true, &k, NULL), -EPERM);
        /* A refused file is left as it was. */
        {
                struct blob b = read_file(path);
                ck_assert_uint_eq(b.size, sizeof bytes);
                ck_assert_int_eq(memcmp(b.data, bytes, sizeof bytes), 0);
                free(b.data);
        }
        scratch_remove();
}
END_TEST

START_TEST(test_ids) {
        struct token_key k, other;
        uint8_t id[TOKEN_ID_BYTES], back[TOKEN_ID_BYTES], again[TOKEN_ID_BYTES];
        char text[TOKEN_ID_STRING_LEN + 1], next[TOKEN_ID_STRING_LEN + 1];

        ck_assert_int_eq(token_init(), 0);
        token_key_random(&k);
        token_key_random(&other);
        token_id_derive(&k, T0, 41, id);
        token_id_format(id, text);
        ck_assert_uint_eq(strlen(text), TOKEN_ID_STRING_LEN);
        ck_assert_int_eq(token_id_parse(text, back), 0);
        ck_assert_int_eq(memcmp(id, back, sizeof id), 0);

        /* Derived: the same key, time and row give the same id. */
        token_id_derive(&k, T0, 41, again);
        ck_assert_int_eq(memcmp(id, again, sizeof id), 0);
        /* It starts with the creation time (big-endian seconds)... */
        ck_assert_uint_eq((uint32_t) id[0] << 24 | (uint32_t) id[1] << 16 | (uint32_t) id[2] << 8 | id[3], T0);
        /* ...and the rest depends on the row and on the key. */
        token_id_derive(&k, T0, 42, again);
        token_id_format(again, next);
        ck_assert_str_ne(text, next);
        ck_assert_int_eq(memcmp(id, again, 4), 0);
        ck_assert_int_ne(memcmp(id + 4, again + 4, sizeof id - 4), 0);
        token_id_derive(&other, T0, 41, again);
        ck_assert_int_ne(memcmp(id + 4, again + 4, sizeof id - 4), 0);

        ck_assert_int_eq(token_id_parse("", back), -EINVAL);
        ck_assert_int_eq(token_id_parse("short", back), -EINVAL);
        ck_assert_int_eq(token_id_parse("!!!!!!!!!!!!!!!!!!!!!!", back), -EINVAL);
        ck_assert_int_eq(token_id_parse(NULL, back), -EINVAL);
}
END_TEST

/* The key's check value: the same for the same key, different for any
 * other, hex, and not the key itself. */
START_TEST(test_key_check) {
        struct token_key a, b;
        char ca[TOKEN_KEY_CHECK_LEN + 1], ca2[TOKEN_KEY_CHECK_LEN + 1], cb[TOKEN_KEY_CHECK_LEN + 1];
        char hex[2 * TOKEN_KEY_BYTES + 1];

        ck_assert_int_eq(token_key_random(&a), 0);
        b = a;
        token_key_check(&a, ca);
        token_key_check(&b, ca2);
        ck_assert_str_eq(ca, ca2);
        ck_assert_uint_eq(strlen(ca), TOKEN_KEY_CHECK_LEN);
        ck_assert_uint_eq(strspn(ca, "0123456789abcdef"), TOKEN_KEY_CHECK_LEN);
        b.id_key[15] ^= 1; /* any part of the key counts */
        token_key_check(&b, cb);
        ck_assert_str_ne(ca, cb);
        sodium_bin2hex(hex, sizeof hex, a.hash_key, TOKEN_KEY_BYTES);
        ck_assert_ptr_null(strstr(hex, ca));
}
END_TEST

START_TEST(test_fingerprints) {
        struct token_key k;

        ck_assert_int_eq(token_init(), 0);
        token_key_random(&k);
        ck_assert_uint_ne(token_fingerprint(&k, "a"), 0);
        ck_assert_uint_ne(token_fingerprint(&k, ""), 0);
        ck_assert_uint_eq(token_fingerprint(&k, "Mozilla/5.0"), token_fingerprint(&k, "Mozilla/5.0"));
        ck_assert_uint_ne(token_fingerprint(&k, "Mozilla/5.0"), token_fingerprint(&k, "Mozilla/5.1"));
}
END_TEST

int main(void) {
        Suite *s = suite_create("token");
        TCase *tc = tcase_create("token");

        log_setup();
        tcase_add_test(tc, test_token_shape);
        tcase_add_test(tc, test_token_unique);
        tcase_add_test(tc, test_key_file_created_and_reused);
        tcase_add_test(tc, test_key_file_elsewhere);
        tcase_add_test(tc, test_key_differs_between_stores);
        tcase_add_test(tc, test_key_file_refused);
        tcase_add_test(tc, test_ids);
        tcase_add_test(tc, test_fingerprints);
        tcase_add_test(tc, test_key_check);
        suite_add_tcase(s, tc);
        return run_suite(s);
}

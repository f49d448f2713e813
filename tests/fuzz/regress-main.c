/* The regression runner: a fuzz target without libFuzzer.
 *
 * Linked with one fuzz-<name>.c, this program runs LLVMFuzzerTestOneInput()
 * over every file of the folders (or the files) named on its command line:
 * the target's reproducers in tests/fuzz/regressions/<name>/ and its seed
 * corpus. Every build registers it as a test (suite fuzz-regression), so a
 * crash found once stays a test in the plain and the sanitizer builds, with
 * gcc as with clang, and no libFuzzer is needed to run it.
 *
 * Each input is copied into a buffer of exactly its size, so that ASan sees
 * a read one byte past the end, as it would under libFuzzer. Files are run
 * in name order, and each name is printed before it runs: the last name in
 * a failed test's log is the input that failed. A path that does not exist
 * is an error (a misspelt folder must not pass as "nothing to run"), and so
 * is running no input at all.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int run_file(const char *path) {
        FILE *f = fopen(path, "rbe");
        uint8_t *buf = NULL, *exact;
        size_t size = 0, allocated = 0, n;

        if (!f) {
                fprintf(stderr, "%s: %s\n", path, strerror(errno));
                return -errno;
        }
        for (;;) {
                if (size == allocated) {
                        uint8_t *p = realloc(buf, allocated ? allocated * 2 : 4096);
                        if (!p) {
                                free(buf);
                                fclose(f);
                                return -ENOMEM;
                        }
                        buf = p;
                        allocated = allocated ? allocated * 2 : 4096;
                }
                n = fread(buf + size, 1, allocated - size, f);
                size += n;
                if (n == 0)
                        break;
        }
        if (ferror(f)) {
                fprintf(stderr, "%s: read error\n", path);
                free(buf);
                fclose(f);
                return -EIO;
        }
        fclose(f);

        /* malloc(0) may return NULL: keep one byte for the empty input. */
        exact = malloc(size ? size : 1);
        if (!exact) {
                free(buf);
                return -ENOMEM;
        }
        if (size)
                memcpy(exact, buf, size);
        free(buf);

        fprintf(stderr, "running %s (%zu bytes)\n", path, size);
        LLVMFuzzerTestOneInput(exact, size);
        free(exact);
        return 0;
}

static int name_compare(const struct dirent **a, const struct dirent **b) {
        return strcmp((*a)->d_name, (*b)->d_name);
}

static int run_path(const char *path, size_t *count) {
        struct dirent **names = NULL;
        struct stat st;
        int n, r = 0;

        if (stat(path, &st) < 0) {
                fprintf(stderr, "%s: %s\n", path, strerror(errno));
                return -errno;
        }
        if (!S_ISDIR(st.st_mode)) {
                r = run_file(path);
                *count += r == 0;
                return r;
        }
        n = scandir(path, &names, NULL, name_compare);
        if (n < 0) {
                fprintf(stderr, "%s: %s\n", path, strerror(errno));
                return -errno;
        }
        for (int i = 0; i < n; i++) {
                char *full = NULL;
                if (names[i]->d_name[0] != '.' && r == 0) {
                        if (asprintf(&full, "%s/%s", path, names[i]->d_name) < 0)
                                r = -ENOMEM;
                        else if (stat(full, &st) == 0 && S_ISREG(st.st_mode)) {
                                r = run_file(full);
                                *count += r == 0;
                        }
                        free(full);
                }
                free(names[i]);
        }
        free(names);
        return r;
}

int main(int argc, char **argv) {
        size_t count = 0;

        if (argc < 2) {
                fprintf(stderr, "usage: %s FOLDER|FILE...\n", argv[0]);
                return 2;
        }
        for (int i = 1; i < argc; i++)
                if (run_path(argv[i], &count) < 0)
                        return 1;
        if (count == 0) {
                fprintf(stderr, "no inputs found\n");
                return 1;
        }
        printf("%zu inputs ran without a finding\n", count);
        return 0;
}

/* malloc and memset of argv[1] bytes, then a line on stdout: five lines of
 * C that an old wasi-libc (before 2023) turns into an overlap with the
 * preview 1 adapter's memory once the block reaches the pages the adapter
 * grew (tests/c.rs). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    size_t n = argc > 1 ? strtoul(argv[1], 0, 10) : 100;
    char *p = malloc(n);
    if (!p)
        return 2;
    memset(p, 0xAB, n);
    /* Reading the block back keeps the compiler from dropping it. */
    printf("%zu bytes set to %d\n", n, (unsigned char)p[n - 1]);
    return 0;
}

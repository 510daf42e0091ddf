/* A C agent: plain libc on its zone. Build it for wasm32-wasi with zig
 * (pip install ziglang):
 *
 *     python3 -m ziglang cc -target wasm32-wasi -O2 -o hello-c.wasm hello.c
 *
 * then `nexus run hello-c.wasm --zone z1 -- NAME`. The module is a wasip1
 * core module; nexus wraps it with the preview1 adapter. */

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "world";
    /* The heap, well past the first pages the module starts with. */
    size_t size = 4 << 20;
    char *buf = malloc(size);
    if (!buf) {
        perror("malloc");
        return 2;
    }
    memset(buf, 'x', size);

    FILE *f = fopen("/c-hello.txt", "w");
    if (!f) {
        perror("/c-hello.txt");
        return 2;
    }
    fprintf(f, "hello, %s, from C\n", name);
    fclose(f);

    int entries = 0;
    DIR *root = opendir("/");
    while (root && readdir(root)) {
        entries++;
    }
    if (root) {
        closedir(root);
    }
    printf("hello, %s: %zu heap bytes, %d entries in /\n", name, size, entries);
    free(buf);
    return 0;
}

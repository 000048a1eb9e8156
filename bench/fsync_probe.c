/*
 * fsync_probe DIR [N]: what one durable commit costs on DIR's filesystem, the floor of the
 * gateway's c=1 latency (issue 11: "c=1 p50 within one fdatasync p50 of nginx's"). Writes one
 * 4 KiB page (a WAL frame's size) then fdatasync(), N times (default 2000), cycling over a
 * 4 MiB file written once beforehand (as SQLite reuses its WAL, so the file's size does not
 * change), and prints the latency of each write+fdatasync as p50/p99/max in µs: once back to
 * back, and once PAUSE_US apart, the pace of the gateway's commits at c=1 (a request's round trips
 * to the client and the upstream lie between two of them). On this VM the paced figure is ~2x
 * the back-to-back one: a flush that finds the disk (and the vCPU) idle costs more.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PAGE     4096
#define PAGES    1024
#define PAUSE_US 500
#define STR_(x)  #x
#define STR(x)   STR_(x)

static int cmp(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

static long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000L + ts.tv_nsec / 1000;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: fsync_probe DIR [N]\n");
        return 2;
    }
    long n = argc == 3 ? atol(argv[2]) : 2000;
    if (n < 1 || n > 10000000) {
        fprintf(stderr, "fsync_probe: N must be 1..10000000\n");
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/fsync_probe.%ld", argv[1], (long)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        fprintf(stderr, "fsync_probe: %s: %s\n", path, strerror(errno));
        return 1;
    }
    unlink(path); /* gone when we exit, whatever happens */
    static char page[PAGE];
    memset(page, 'x', sizeof(page));
    for (int i = 0; i < PAGES; i++)
        if (pwrite(fd, page, PAGE, (off_t)i * PAGE) != PAGE)
            goto fail;
    if (fsync(fd) != 0)
        goto fail;
    long *us = malloc((size_t)n * sizeof(*us));
    if (!us)
        return 1;
    for (int paced = 0; paced < 2; paced++) {
        for (long i = 0; i < n; i++) {
            if (paced) {
                struct timespec pause = {0, PAUSE_US * 1000L};
                nanosleep(&pause, NULL);
            }
            page[0] = (char)i;
            long t0 = now_us();
            if (pwrite(fd, page, PAGE, (off_t)(i % PAGES) * PAGE) != PAGE || fdatasync(fd) != 0)
                goto fail;
            us[i] = now_us() - t0;
        }
        qsort(us, (size_t)n, sizeof(*us), cmp);
        printf("fdatasync %s%s: n=%ld p50=%ldus p99=%ldus max=%ldus\n", argv[1],
               paced ? " (" STR(PAUSE_US) " us apart)" : "", n, us[n / 2], us[n * 99 / 100],
               us[n - 1]);
    }
    free(us);
    close(fd);
    return 0;
fail:
    fprintf(stderr, "fsync_probe: %s: %s\n", path, strerror(errno));
    return 1;
}

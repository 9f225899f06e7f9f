/* The floor of a holder scan: what our lookup does after netlink, in C.
 *
 * `fdscan INODE SAMPLES`: SAMPLES times, read every fd table under /proc (each opened relative
 * to an open /proc, its links read relative to it, as supervisor/system/net/owners.py does) and
 * collect the pids whose fds hold `socket:[INODE]`. Prints one line per sample: the time in ns,
 * then the holders found. Built and run by `python -m bench preflight` (bench/preflight.py).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int held_by(int proc_fd, const char *pid, const char *want, size_t want_len) {
    char path[64];
    snprintf(path, sizeof path, "%s/fd", pid);
    int fd_dir = openat(proc_fd, path, O_RDONLY | O_DIRECTORY);
    if (fd_dir < 0) return 0;
    DIR *fds = fdopendir(fd_dir);
    if (fds == NULL) {
        close(fd_dir);
        return 0;
    }
    int found = 0;
    struct dirent *entry;
    char link[128];
    while ((entry = readdir(fds)) != NULL) {
        if (entry->d_name[0] == '.') continue;
        ssize_t n = readlinkat(fd_dir, entry->d_name, link, sizeof link);
        if (n == (ssize_t)want_len && memcmp(link, want, want_len) == 0) found = 1;
    }
    closedir(fds);
    return found;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: fdscan INODE SAMPLES\n");
        return 2;
    }
    char want[64];
    size_t want_len = (size_t)snprintf(want, sizeof want, "socket:[%s]", argv[1]);
    int samples = atoi(argv[2]);
    for (int i = 0; i < samples; i++) {
        long long start = now_ns();
        char holders[4096] = "";
        size_t used = 0;
        int proc_fd = open("/proc", O_RDONLY | O_DIRECTORY);
        DIR *proc = fdopendir(dup(proc_fd));
        struct dirent *entry;
        while (proc != NULL && (entry = readdir(proc)) != NULL) {
            if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
            if (held_by(proc_fd, entry->d_name, want, want_len) && used < sizeof holders - 16)
                used += (size_t)snprintf(holders + used, sizeof holders - used, " %s", entry->d_name);
        }
        if (proc != NULL) closedir(proc);
        close(proc_fd);
        printf("%lld%s\n", now_ns() - start, holders);
    }
    return 0;
}

/*
 * LD_PRELOAD shim behind the harness's power cuts (see power_cut.rs).
 *
 * Every successful fsync or fdatasync of a regular file under
 * $POWER_CUT_WATCHED_DIR appends one line "<length> <inode> <path>" to
 * $POWER_CUT_SYNC_RECORD: the length the file had when the sync began, which
 * is what the sync made durable. Nothing else changes: writes still reach the
 * kernel's page cache, so the record is the only thing a power cut needs.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The file behind `fd` if it is a regular file under the watched dir. */
static int watched_file(int fd, char *path, size_t size, struct stat *st) {
  const char *watched = getenv("POWER_CUT_WATCHED_DIR");
  if (watched == NULL || getenv("POWER_CUT_SYNC_RECORD") == NULL) {
    return 0;
  }
  char link[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, size - 1);
  if (n <= 0) {
    return 0;
  }
  path[n] = '\0';
  if (strncmp(path, watched, strlen(watched)) != 0) {
    return 0;
  }
  return fstat(fd, st) == 0 && S_ISREG(st->st_mode);
}

static void record(const char *path, const struct stat *st) {
  char line[4200];
  int len = snprintf(line, sizeof line, "%lld %llu %s\n", (long long)st->st_size,
                     (unsigned long long)st->st_ino, path);
  if (len <= 0 || (size_t)len >= sizeof line) {
    return;
  }
  int out = open(getenv("POWER_CUT_SYNC_RECORD"), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (out < 0) {
    return;
  }
  /* One write with O_APPEND: lines of concurrent syncs never interleave. */
  ssize_t written = write(out, line, (size_t)len);
  (void)written;
  close(out);
}

static int synced(const char *name, int fd) {
  int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, name);
  char path[4096];
  struct stat st;
  int watched = watched_file(fd, path, sizeof path, &st);
  int result = real(fd);
  if (result == 0 && watched) {
    record(path, &st);
  }
  return result;
}

int fsync(int fd) { return synced("fsync", fd); }

int fdatasync(int fd) { return synced("fdatasync", fd); }

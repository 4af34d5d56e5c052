/*
 * Calls stat(2) on one path a given number of times and prints the
 * elapsed wall-clock time in seconds, so that process start-up is not
 * part of the measurement. With "xattr" as third argument it reads an
 * extended attribute that the file lacks instead. The kernel caches no
 * result for that, so on FUSE every call is one round trip to the daemon.
 *
 * Usage: statloop PATH COUNT [xattr]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>

#define MISSING_XATTR "user.lamina-bench-missing"

static int call(const char *path, int xattr)
{
	struct stat st;
	char value[16];

	if (!xattr)
		return stat(path, &st);
	if (lgetxattr(path, MISSING_XATTR, value, sizeof(value)) >= 0) {
		errno = EEXIST;
		return -1;
	}
	/* Some FUSE filesystems return ENOTSUP, after a round trip all the same. */
	return errno == ENODATA || errno == ENOTSUP ? 0 : -1;
}

int main(int argc, char **argv)
{
	struct timespec start, end;
	char *tail;
	long count;
	int xattr = argc == 4 && strcmp(argv[3], "xattr") == 0;

	if (argc != 3 && !xattr) {
		fprintf(stderr, "usage: statloop PATH COUNT [xattr]\n");
		return 2;
	}
	count = strtol(argv[2], &tail, 10);
	if (*argv[2] == '\0' || *tail != '\0' || count <= 0) {
		fprintf(stderr, "statloop: invalid COUNT '%s': expected a positive integer\n",
			argv[2]);
		return 2;
	}

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (long i = 0; i < count; i++) {
		if (call(argv[1], xattr) != 0) {
			fprintf(stderr, "statloop: %s '%s' failed on call %ld: %s\n",
				xattr ? "getxattr" : "stat", argv[1], i + 1,
				strerror(errno));
			return 1;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &end);

	printf("%.9f\n", (double)(end.tv_sec - start.tv_sec) +
				 (double)(end.tv_nsec - start.tv_nsec) / 1e9);
	return 0;
}

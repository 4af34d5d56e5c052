/*
 * Calls stat(2) on one path a given number of times and prints the
 * elapsed wall-clock time in seconds, so that process start-up is not
 * part of the measurement.
 *
 * Usage: statloop PATH COUNT
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

int main(int argc, char **argv)
{
	struct timespec start, end;
	struct stat st;
	char *tail;
	long count;

	if (argc != 3) {
		fprintf(stderr, "usage: statloop PATH COUNT\n");
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
		if (stat(argv[1], &st) != 0) {
			fprintf(stderr, "statloop: stat '%s' failed on call %ld: %s\n",
				argv[1], i + 1, strerror(errno));
			return 1;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &end);

	printf("%.9f\n", (double)(end.tv_sec - start.tv_sec) +
				 (double)(end.tv_nsec - start.tv_nsec) / 1e9);
	return 0;
}

// SPDX-License-Identifier: GPL-2.0-or-later
/* lamina umount: unmount a lamina mount; its daemon then exits. */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

/* True if /proc/self/mountinfo lists a fuse.lamina mount at path. */
static bool is_lamina_mount(const char *path)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[8192], mnt[PATH_MAX], type[256];
	bool found = false;

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		const char *sep = strstr(line, " - ");

		/* Field 5 is the mount point; after " - " comes the type. */
		if (!sep || sscanf(line, "%*s %*s %*s %*s %4095s", mnt) != 1 ||
		    sscanf(sep + 3, "%255s", type) != 1)
			continue;
		cli_unescape_octal(mnt);
		if (!strcmp(mnt, path) && !strcmp(type, "fuse.lamina"))
			found = true;
	}
	fclose(f);
	return found;
}

static int fusermount_unmount(const char *path)
{
	pid_t pid = fork();
	int status;

	if (pid == 0) {
		execlp("fusermount3", "fusermount3", "-u", "--", path,
		       (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

int cmd_umount(int argc, char **argv)
{
	char real[PATH_MAX];
	int link;

	if (argc == 2 &&
	    (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		cli_usage();
		return 0;
	}
	if (argc != 2) {
		fputs("lamina: usage: lamina umount MERGED\n", stderr);
		return EXIT_USAGE;
	}
	if (!realpath(argv[1], real)) {
		fprintf(stderr, "lamina: %s: %s\n", argv[1], strerror(errno));
		return EXIT_MOUNT_FAIL;
	}
	if (!is_lamina_mount(real)) {
		fprintf(stderr, "lamina: %s is not a lamina mount\n", real);
		return EXIT_MOUNT_FAIL;
	}
	link = daemon_link_connect(real);
	if (umount2(real, 0) == 0 ||
	    (errno == EPERM && fusermount_unmount(real) == 0)) {
		daemon_link_wait(link, real);
		return 0;
	}
	if (link >= 0)
		close(link);
	if (errno == EBUSY)
		fprintf(stderr, "lamina: %s is busy; close the files open below it, or detach it with umount -l\n",
			real);
	else
		fprintf(stderr, "lamina: unmounting %s failed: %s\n", real,
			strerror(errno));
	return EXIT_MOUNT_FAIL;
}

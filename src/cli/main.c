// SPDX-License-Identifier: GPL-2.0-or-later
/* lamina: a union filesystem in user space with overlayfs's format. */
#include "cli.h"
#include "ovl/ovl.h"

#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Edit distance of a and b, to catch a mistyped command name. */
static int distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), i, j;
	int row[16], prev, cur;

	if (lb >= sizeof(row) / sizeof(row[0]) || la > 32)
		return 99;
	for (j = 0; j <= lb; j++)
		row[j] = (int)j;
	for (i = 1; i <= la; i++) {
		prev = row[0];
		row[0] = (int)i;
		for (j = 1; j <= lb; j++) {
			cur = row[j];
			row[j] = prev + (a[i - 1] != b[j - 1]);
			if (row[j] > row[j - 1] + 1)
				row[j] = row[j - 1] + 1;
			if (row[j] > cur + 1)
				row[j] = cur + 1;
			prev = cur;
		}
	}
	return row[lb];
}

/* A source name that is a near miss of a command is a typing error. */
static const char *near_command(const char *word)
{
	static const char *const commands[] = {
	    "mount", "umount", "unmount", "check",  "status", "diff",
	    "reset", "commit", "squash",  "export", "import"};
	const char *best = NULL;
	int best_distance = 3; /* farther than two edits is a source name */
	size_t i;

	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		int d = distance(word, commands[i]);

		if (d < best_distance) {
			best = commands[i];
			best_distance = d;
		}
	}
	return best;
}

static int main_mount_fuse_form(int argc, char **argv)
{
	struct mount_args args = {0};
	int err;

	/* lamina SOURCE MOUNTPOINT [-o OPTIONS]: source is argv[1]. */
	args.source = argv[1];
	err = cli_parse_mount_args(argc - 1, argv + 1, &args);
	if (err)
		return err;
	return cmd_mount(&args);
}

/* The commands that take their own arguments after the name. */
static const struct {
	const char *name;
	int (*run)(int argc, char **argv);
} layer_commands[] = {
    {"check", cmd_check},   {"status", cmd_status}, {"diff", cmd_diff},
    {"reset", cmd_reset},   {"commit", cmd_commit}, {"squash", cmd_squash},
    {"export", cmd_export}, {"import", cmd_import},
};

/*
 * Open /dev/null on each of stdin, stdout and stderr that the caller
 * closed. Otherwise the layer descriptors opened next could take those
 * numbers, and a daemon going to the background, which points the three
 * at /dev/null, would close them.
 */
static void fill_std_streams(void)
{
	int fd;

	do
		fd = open("/dev/null", O_RDWR);
	while (fd >= 0 && fd <= STDERR_FILENO);
	if (fd > STDERR_FILENO)
		close(fd);
}

int main(int argc, char **argv)
{
	struct mount_args args = {0};
	const char *name = strrchr(argv[0], '/');
	size_t i;
	int err;

	fill_std_streams();
	/* The daemon starts its directory reader under this name. */
	if (argc == 1 && !strcmp(argv[0], OVL_READAHEAD_CHILD))
		return ovl_readahead_child();
	/* Installed as mount.lamina, it is mount(8)'s helper. */
	if (!strcmp(name ? name + 1 : argv[0], "mount.lamina"))
		return cmd_mount_helper(argc, argv);
	if (argc < 2) {
		fputs(
		    "lamina: no command given; run lamina --help for the commands and options\n",
		    stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		cli_usage();
		return 0;
	}
	if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
		printf("lamina %s\n", LAMINA_VERSION);
		return 0;
	}
	if (!strcmp(argv[1], "umount") || !strcmp(argv[1], "unmount"))
		return cmd_umount(argc - 1, argv + 1);
	for (i = 0; i < sizeof(layer_commands) / sizeof(layer_commands[0]); i++)
		if (!strcmp(argv[1], layer_commands[i].name))
			return layer_commands[i].run(argc - 1, argv + 1);
	if (!strcmp(argv[1], "mount")) {
		err = cli_parse_mount_args(argc - 1, argv + 1, &args);
		return err ? err : cmd_mount(&args);
	}
	if (near_command(argv[1])) {
		fprintf(
		    stderr,
		    "lamina: unknown command '%s'; did you mean '%s'? Run lamina --help\n",
		    argv[1], near_command(argv[1]));
		return EXIT_USAGE;
	}
	if (argv[1][0] != '-' && argc >= 3)
		return main_mount_fuse_form(argc, argv);
	fprintf(stderr, "lamina: unknown command '%s'; run lamina --help\n",
		argv[1]);
	return EXIT_USAGE;
}

// SPDX-License-Identifier: GPL-2.0-or-later
/* lamina: a union filesystem in user space with overlayfs's format. */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int main(int argc, char **argv)
{
	struct mount_args args = {0};
	int err;

	if (argc < 2) {
		cli_usage();
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
	if (!strcmp(argv[1], "mount")) {
		err = cli_parse_mount_args(argc - 1, argv + 1, &args);
		return err ? err : cmd_mount(&args);
	}
	if (argv[1][0] != '-' && argc >= 3)
		return main_mount_fuse_form(argc, argv);
	fprintf(stderr, "lamina: unknown command '%s'; run lamina --help\n",
		argv[1]);
	return EXIT_USAGE;
}

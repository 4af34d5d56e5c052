// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * mount.lamina: the helper that mount(8) runs for filesystem type
 * "lamina", so that an fstab line written for overlay works with only
 * the type changed. mount(8) calls it as
 *   mount.lamina SOURCE DIR [-sfnv] [-N NAMESPACE] [-o OPTIONS] [-t TYPE]
 */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

int cmd_mount_helper(int argc, char **argv)
{
	struct mount_args args = {0};
	bool fake = false;
	int c;

	if (argc < 3) {
		fputs("mount.lamina: usage: mount.lamina SOURCE DIR [-o OPTIONS]\n",
		      stderr);
		return EXIT_USAGE;
	}
	args.source = argv[1];
	args.mountpoint = argv[2];
	optind = 3;
	opterr = 0;
	/* The leading ':' makes a missing argument return ':', not '?'. */
	while ((c = getopt(argc, argv, ":sfnvo:t:N:")) != -1) {
		switch (c) {
		case 'o':
			args.options = optarg;
			break;
		case 'f': /* fake: do everything but mount */
			fake = true;
			break;
		case 'N':
			fputs("mount.lamina: -N (another mount namespace) is not supported\n",
			      stderr);
			return EXIT_USAGE;
		case ':':
			fprintf(
			    stderr,
			    "mount.lamina: option '%s' requires an argument\n",
			    argv[optind - 1]);
			return EXIT_USAGE;
		case 's': /* sloppy: lamina rejects unknown options anyway */
		case 'n': /* no mtab: there is none to write */
		case 'v':
		case 't':
			break;
		default:
			fprintf(stderr, "mount.lamina: invalid option '%s'\n",
				argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (!args.options) {
		fputs("mount.lamina: no options given; add -o lowerdir=DIR,...\n",
		      stderr);
		return EXIT_USAGE;
	}
	if (fake)
		return 0;
	return cmd_mount_copy(&args);
}

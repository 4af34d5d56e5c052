// SPDX-License-Identifier: GPL-2.0-or-later
/* lamina: a union filesystem in user space with overlayfs's format. */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cli_usage(void)
{
	fputs("Usage:\n"
	      "  lamina mount [-f] [-d] -o lowerdir=DIRS[,upperdir=DIR,workdir=DIR][,OPTION...] MERGED\n"
	      "  lamina umount MERGED\n"
	      "  lamina SOURCE MERGED -o OPTIONS   (the form mount -t fuse.lamina uses)\n"
	      "\n"
	      "Mount read-only lower directories and one writable upper directory as\n"
	      "one merged tree, in the on-disk format of the kernel's overlayfs.\n"
	      "\n"
	      "Commands:\n"
	      "  mount            mount a layer stack on MERGED\n"
	      "  umount           unmount MERGED; the daemon then exits\n"
	      "\n"
	      "Options of mount:\n"
	      "  -f, --foreground stay in the foreground and log to stderr\n"
	      "  -d, --debug      log every request and reply (implies -f)\n"
	      "  -o OPTIONS       comma-separated mount options (below); may repeat\n"
	      "\n"
	      "Mount options (as for mount -t overlay):\n"
	      "  lowerdir=A:B:C   lower layers, the top one first; \\: escapes a colon\n"
	      "  upperdir=DIR     writable layer; without it the mount is read-only\n"
	      "  workdir=DIR      empty directory on the upper's filesystem\n"
	      "  ro, rw           read-only or read-write mount\n"
	      "  userxattr        keep overlay xattrs in user.overlay.* instead of trusted.overlay.*\n"
	      "  volatile         skip every sync to the upper filesystem\n"
	      "  redirect_dir=off|nofollow, index=off, metacopy=off, xino=off|auto,\n"
	      "  uuid=auto|null|off, nfs_export=off, verity=off\n"
	      "                   accepted with these values only\n"
	      "  passthrough=on|off\n"
	      "                   let the kernel read and write the real files\n"
	      "                   directly (default on; needs CAP_SYS_ADMIN)\n"
	      "  allow_other      let other users in (default when run as root)\n"
	      "  nosuid, nodev, noexec, noatime, ... and other mount(8) flags\n"
	      "\n"
	      "  -h, --help       show this help\n"
	      "  -V, --version    show the version\n"
	      "\n"
	      "Exit status: 0 success, 1 invalid command line or option,\n"
	      "32 the mount or unmount failed. See lamina(8).\n",
	      stdout);
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

// SPDX-License-Identifier: GPL-2.0-or-later
/* The --help text. */
#include "cli.h"

#include <stdio.h>

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
	      "                   and \\, a comma in any path\n"
	      "  upperdir=DIR     writable layer; without it the mount is read-only\n"
	      "  workdir=DIR      empty directory on the upper's filesystem\n"
	      "  ro, rw           read-only or read-write mount\n"
	      "  userxattr        keep overlay xattrs in user.overlay.* instead of trusted.overlay.*\n"
	      "  volatile         skip every sync to the upper filesystem\n"
	      "  redirect_dir=on|follow|off|nofollow\n"
	      "                   directory renames with redirects (default on)\n"
	      "  xino=auto|on|off  unique inode numbers across filesystems\n"
	      "  index=off, metacopy=off,\n"
	      "  uuid=auto|null|off, nfs_export=off, verity=off\n"
	      "                   accepted with these values only\n"
	      "  passthrough=on|off\n"
	      "                   let the kernel read and write the real files\n"
	      "                   directly (default on; needs CAP_SYS_ADMIN)\n"
	      "  allow_other      let other users in (default when run as root)\n"
	      "  fsname=NAME      source shown in /proc/mounts (default lamina)\n"
	      "  nosuid, nodev, noexec, noatime, ... and other mount(8) flags\n"
	      "\n"
	      "Other options:\n"
	      "  -h, --help       show this help\n"
	      "  -V, --version    show the version\n"
	      "\n"
	      "Exit status: 0 success, 1 invalid command line or option,\n"
	      "32 the mount or unmount failed. See lamina(8).\n",
	      stdout);
}

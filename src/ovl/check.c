// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Findings about a layer stack that do not stop a mount: missing
 * features that lamina works around, resources running low, and which
 * fast paths the kernel offers. lamina check prints them all, and
 * lamina mount prints the warnings before it mounts.
 */
#include "ovl.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <unistd.h>

#ifndef FUSE_SUPER_MAGIC
#define FUSE_SUPER_MAGIC 0x65735546
#endif

/* Below this share of free inodes on the upper filesystem, warn. */
#define OVL_INODE_HEADROOM_PERCENT 5

struct check_ctx {
	ovl_check_fn report;
	void *arg;
	int warnings;
};

static void say(struct check_ctx *c, enum ovl_check_level level,
		const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void say(struct check_ctx *c, enum ovl_check_level level,
		const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (level == OVL_CHECK_WARN)
		c->warnings++;
	c->report(c->arg, level, msg);
}

/* Each copy-up and whiteout costs an inode on the upper filesystem. */
static void check_inodes(struct ovl_fs *fs, struct check_ctx *c)
{
	struct statvfs st;
	unsigned long long pct;

	if (fstatvfs(fs->upper->fd, &st) < 0 || st.f_files == 0)
		return; /* no fixed inode count, as on btrfs */
	pct = (unsigned long long)st.f_favail * 100 / st.f_files;
	if (pct < OVL_INODE_HEADROOM_PERCENT)
		say(c, OVL_CHECK_WARN,
		    "upperdir %s: only %llu%% of the filesystem's inodes are free (%llu); each copy-up and whiteout takes one, so free some or give the upper more",
		    fs->upper->path, pct, (unsigned long long)st.f_favail);
	else
		say(c, OVL_CHECK_INFO, "upperdir %s: %llu inodes free (%llu%%)",
		    fs->upper->path, (unsigned long long)st.f_favail, pct);
}

/*
 * A layer on overlayfs or FUSE is stacked already: passthrough cannot
 * use its files (the kernel allows two levels of stacking), so reads
 * and writes of those files go through lamina.
 */
static int check_stacking(struct ovl_fs *fs, struct check_ctx *c)
{
	struct statfs st;
	int i, stacked = 0;

	for (i = 0; i < fs->nlayers; i++) {
		if (fstatfs(fs->layers[i].fd, &st) < 0)
			continue;
		if (st.f_type != OVERLAYFS_SUPER_MAGIC &&
		    st.f_type != FUSE_SUPER_MAGIC)
			continue;
		say(c, OVL_CHECK_WARN,
		    "%s %s is on %s: the kernel allows no passthrough for its files, so they are read and written through lamina",
		    fs->layers[i].is_upper ? "upperdir" : "lowerdir",
		    fs->layers[i].path,
		    st.f_type == FUSE_SUPER_MAGIC ? "a FUSE filesystem"
						  : "overlayfs");
		stacked++;
	}
	return stacked;
}

/* FUSE passthrough: Linux 6.9 and CAP_SYS_ADMIN. stacked is the number
 * of layers check_stacking() warned about. */
static void check_passthrough(struct ovl_fs *fs, struct check_ctx *c,
			      int stacked)
{
	struct utsname u;
	int major = 0, minor = 0;

	if (!fs->config.passthrough) {
		say(c, OVL_CHECK_INFO, "passthrough: off (passthrough=off)");
		return;
	}
	if (uname(&u) == 0)
		sscanf(u.release, "%d.%d", &major, &minor);
	if (major < 6 || (major == 6 && minor < 9))
		say(c, OVL_CHECK_WARN,
		    "passthrough: unavailable, Linux %s is older than 6.9; reads and writes go through lamina",
		    u.release);
	else if (geteuid() != 0)
		say(c, OVL_CHECK_WARN,
		    "passthrough: unavailable without root (CAP_SYS_ADMIN); reads and writes go through lamina");
	else if (stacked)
		say(c, OVL_CHECK_INFO,
		    "passthrough: available, except for the files of the %d layer%s on FUSE or overlayfs warned about above",
		    stacked, stacked == 1 ? "" : "s");
	else
		say(c, OVL_CHECK_INFO, "passthrough: available");
}

/* FUSE over io_uring: compiled in, then enabled by a module parameter. */
static void check_io_uring(struct ovl_fs *fs, struct check_ctx *c)
{
	char value[8] = "";
	int fd;

	if (!fs->config.io_uring) {
		say(c, OVL_CHECK_INFO,
		    "FUSE over io_uring: off (io_uring=off)");
		return;
	}
	fd = open("/sys/module/fuse/parameters/enable_uring",
		  O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		say(c, OVL_CHECK_INFO,
		    "FUSE over io_uring: not in this kernel (Linux 6.14 or later has it); requests come through /dev/fuse");
		return;
	}
	if (read(fd, value, sizeof(value) - 1) < 0)
		value[0] = '\0';
	close(fd);
	if (value[0] == 'Y')
		say(c, OVL_CHECK_INFO,
		    "FUSE over io_uring: available; requests come through one queue per CPU");
	else
		say(c, OVL_CHECK_INFO,
		    "FUSE over io_uring: switched off in the kernel; requests come through /dev/fuse (to use it, run echo Y > /sys/module/fuse/parameters/enable_uring before mounting)");
}

/* Report every finding; returns the number of warnings. */
int ovl_check_report(struct ovl_fs *fs, ovl_check_fn report, void *arg)
{
	struct check_ctx c = {.report = report, .arg = arg};

	if (fs->upper) {
		const char *kernel = ovl_upper_kernel_mount(fs);

		/* With the index on, setup rejects a shared upper. */
		if (fs->upper_busy)
			say(&c, OVL_CHECK_WARN,
			    "upperdir %s is in use by another lamina mount too; changing files through both gives undefined results",
			    fs->upper->path);
		if (kernel)
			say(&c, OVL_CHECK_WARN,
			    "upperdir %s is in use by the overlay mount on %s too; changing files through both gives undefined results",
			    fs->upper->path, kernel);
		if (!fs->rename_whiteout)
			say(&c, OVL_CHECK_WARN,
			    "upperdir %s: no RENAME_WHITEOUT, so a rename that leaves a whiteout makes it in a second step, which a crash can interrupt",
			    fs->upper->path);
		check_inodes(fs, &c);
	}
	check_passthrough(fs, &c, check_stacking(fs, &c));
	check_io_uring(fs, &c);
	return c.warnings;
}

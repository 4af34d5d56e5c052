// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Set-ID bits cleared by lamina. With the kernel's HANDLE_KILLPRIV_V2
 * the filesystem clears them when a process without CAP_FSETID writes or
 * truncates a file. It follows the kernel's rules: the set-user-ID bit
 * always goes, and the set-group-ID bit goes from a group executable
 * file, or from any file whose group the process is not in.
 */
#include "ovl.h"
#include "fuse/transport.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/*
 * Whether the process that sent the request is in group gid through a
 * supplementary group, which a FUSE request does not carry: read from
 * /proc. A process that is gone counts as not in the group.
 */
static bool in_supplementary_group(pid_t pid, gid_t gid)
{
	char path[64], line[4096];
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		char *p = line + strlen("Groups:"), *end;

		if (strncmp(line, "Groups:", strlen("Groups:")))
			continue;
		for (;;) {
			unsigned long g = strtoul(p, &end, 10);

			if (end == p)
				break;
			if (g == gid)
				found = true;
			p = end;
		}
		break;
	}
	fclose(f);
	return found;
}

static bool in_group(const struct fuse_ctx *ctx, gid_t gid)
{
	return ctx->gid == gid ||
	       (ctx->pid > 0 && in_supplementary_group(ctx->pid, gid));
}

/*
 * fd is an open file, or -1 to use dirfd and name. Returns 1 when bits
 * were cleared, so that the caller can make the kernel drop the mode it
 * caches.
 */
int ovl_kill_suidgid(int fd, int dirfd, const char *name,
		     const struct fuse_ctx *ctx)
{
	mode_t kill = S_ISUID, mode;
	struct stat st;
	int err;

	err = fd >= 0 ? (fstat(fd, &st) < 0 ? -errno : 0)
		      : ovl_do_fstatat(dirfd, name, &st);
	if (err || !S_ISREG(st.st_mode))
		return err;
	if ((st.st_mode & S_ISGID) &&
	    ((st.st_mode & S_IXGRP) || !in_group(ctx, st.st_gid)))
		kill |= S_ISGID;
	if (!(st.st_mode & kill))
		return 0;
	mode = st.st_mode & ~kill & 07777;
	if (fd >= 0)
		err = fchmod(fd, mode) < 0 ? -errno : 1;
	else
		err = fchmodat(dirfd, name, mode, 0) < 0 ? -errno : 1;
	return err;
}

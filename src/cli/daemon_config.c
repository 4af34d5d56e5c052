// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The configuration a daemon sends over the daemon link: fields of the
 * form key=value, each ending with a NUL byte. "options" comes first and
 * holds mount options that mount the same stack again, with absolute
 * paths; the fields after it say what is in effect.
 */
#include "cli.h"
#include "common/mountflags.h"
#include "fuse/transport.h"
#include "ovl/ovl.h"
#include "stack.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static const char *const redirect_names[] = {
    [OVL_REDIRECT_ON] = "on",
    [OVL_REDIRECT_FOLLOW] = "follow",
    [OVL_REDIRECT_OFF] = "off",
    [OVL_REDIRECT_NOFOLLOW] = "nofollow",
};

static void put_options(FILE *f, const struct ovl_fs *fs)
{
	const struct ovl_config *cfg = &fs->config;
	char flags[128];
	int l;

	fputs("options=lowerdir=", f);
	for (l = fs->first_lower; l < fs->nlayers; l++) {
		/* "::" starts the data-only layers. */
		if (l > fs->first_lower)
			fputs(l == fs->first_data ? "::" : ":", f);
		option_path(f, fs->layers[l].path);
	}
	if (fs->upper) {
		fputs(",upperdir=", f);
		option_path(f, fs->upper->path);
		fputs(",workdir=", f);
		option_path(f, fs->workdir_path);
	}
	fprintf(f, ",redirect_dir=%s,xino=%s,passthrough=%s,io_uring=%s",
		redirect_names[cfg->redirect], cfg->xino_off ? "off" : "auto",
		cfg->passthrough ? "on" : "off", cfg->io_uring ? "on" : "off");
	if (!cfg->prefetch)
		fputs(",prefetch=off", f);
	if (cfg->metacopy)
		fputs(",metacopy=on", f);
	if (cfg->index_set)
		fprintf(f, ",index=%s", cfg->index ? "on" : "off");
	if (cfg->userxattr)
		fputs(",userxattr", f);
	if (cfg->volatile_mount)
		fputs(",volatile", f);
	if (cfg->allow_other)
		fputs(",allow_other", f);
	if (cfg->fsname) {
		fputs(",fsname=", f);
		option_path(f, cfg->fsname);
	}
	flags[0] = '\0';
	mount_flags_append(flags, sizeof(flags), cfg->mount_flags);
	fputs(flags, f);
	fputc('\0', f);
}

/* daemon_link_reply_fn for a lamina daemon; arg is its struct ovl_fs. */
char *daemon_config_reply(void *arg, size_t *len)
{
	const struct ovl_fs *fs = arg;
	char *buf = NULL;
	FILE *f = open_memstream(&buf, len);

	if (!f)
		return NULL;
	put_options(f, fs);
	fprintf(f, "pid=%d%c", (int)getpid(), '\0');
	fprintf(f, "passthrough=%d%c", atomic_load(&fs->passthrough_ok) ? 1 : 0,
		'\0');
	fprintf(f, "io_uring=%d%c", fuse_session_uring_active(fs->se) ? 1 : 0,
		'\0');
	fprintf(f, "prefetch=%d%c", fs->prefetch ? 1 : 0, '\0');
	fprintf(f, "index=%d%c", fs->index_fd >= 0 ? 1 : 0, '\0');
	fprintf(f, "metacopy=%d%c", fs->config.metacopy ? 1 : 0, '\0');
	fprintf(f, "xino=%s%c", fs->xino_shift ? "on" : "off", '\0');
	fprintf(f, "mountpoint=%s%c", fs->config.mountpoint, '\0');
	if (fclose(f)) {
		free(buf);
		return NULL;
	}
	return buf;
}

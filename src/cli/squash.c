// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * lamina squash: merge several lower layers into one new layer. The
 * layer is built in a staging directory beside NEWLAYER and renamed to
 * NEWLAYER once it is complete and on disk, so an interrupted run
 * leaves no NEWLAYER, and the next run removes the staging directory.
 * The run holds a flock on the staging directory until it exits, so a
 * second run to the same NEWLAYER stops instead of removing it.
 */
#include "cli.h"
#include "common/fdlimit.h"
#include "layer/copy.h"
#include "layer_cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SQUASH_USAGE "lamina squash -o lowerdir=DIRS [--bottom] NEWLAYER"

struct squash_cmd {
	struct layer_cmd_args args;
	struct new_layer nl;
	struct layer_format fmt;
	int *layer_fds;
};

/* Whether NEWLAYER exists already; if it does, print so. */
static bool newlayer_exists(const struct squash_cmd *s)
{
	struct stat st;

	if (fstatat(s->nl.parent_fd, s->nl.name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return false;
	fprintf(
	    stderr,
	    "lamina: squash: NEWLAYER %s already exists; give the path of a new directory\n",
	    s->nl.path);
	return true;
}

static int squash_check(struct squash_cmd *s)
{
	int i, rc;

	s->fmt.xattr_prefix =
	    s->args.cfg.userxattr ? "user.overlay." : "trusted.overlay.";
	rc = new_layer_open(&s->nl, s->args.newlayer, "squash");
	for (i = 0; !rc && i < s->args.cfg.nlower; i++)
		rc = layer_cmd_check_apart(&s->nl, s->args.cfg.lowerdirs[i],
					   "lowerdir");
	if (!rc)
		rc = layer_cmd_check_layers(&s->args.cfg, "squash");
	if (!rc && newlayer_exists(s))
		rc = EXIT_USAGE;
	return rc;
}

static int open_layers(struct squash_cmd *s)
{
	int i, n = s->args.cfg.nlower;

	s->layer_fds = malloc((size_t)n * sizeof(int));
	if (!s->layer_fds)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		s->layer_fds[i] = -1;
	for (i = 0; i < n; i++) {
		s->layer_fds[i] = open(s->args.cfg.lowerdirs[i],
				       O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (s->layer_fds[i] < 0) {
			fprintf(
			    stderr,
			    "lamina: squash: lowerdir %s: %s; check the path\n",
			    s->args.cfg.lowerdirs[i], strerror(errno));
			return EXIT_USAGE;
		}
	}
	return 0;
}

/* Remove the staging directory that a killed run left. A live run
 * holds its lock, and then this run stops. */
static int remove_leftover(struct squash_cmd *s)
{
	int err = new_layer_lock_staging(&s->nl);

	if (err == 1) {
		fprintf(
		    stderr,
		    "lamina: removing %s, which an interrupted squash left\n",
		    s->nl.staging_path);
		err = ovl_remove_tree(s->nl.parent_fd, s->nl.staging);
	}
	return err;
}

/* Make and lock the staging directory, after removing what an
 * interrupted run left. */
static int make_staging(struct squash_cmd *s)
{
	int err = remove_leftover(s);

	if (!err)
		err = new_layer_make_staging(&s->nl);
	if (err == -EBUSY) {
		fprintf(
		    stderr,
		    "lamina: squash: another squash to %s is running and holds %s; wait for it to end\n",
		    s->nl.path, s->nl.staging_path);
		return err;
	}
	if (err) {
		fprintf(
		    stderr,
		    "lamina: squash: cannot make the staging directory %s: %s\n",
		    s->nl.staging_path, strerror(-err));
		return err;
	}
	/* A run that ended meanwhile may have made NEWLAYER. */
	if (newlayer_exists(s)) {
		ovl_remove_tree(s->nl.parent_fd, s->nl.staging);
		return -EEXIST;
	}
	return 0;
}

static struct progress *start_progress(struct squash_cmd *s)
{
	struct progress *p = progress_start("squash", 0);
	uint64_t total = 0, count;
	int i;

	for (i = 0; p && i < s->args.cfg.nlower; i++)
		if (!layer_count_entries(s->layer_fds[i], &s->fmt, &count))
			total += count;
	progress_set_total(p, total);
	return p;
}

static int squash_build(struct squash_cmd *s)
{
	struct layer_squash_opts *o = calloc(1, sizeof(*o));
	int outfd, err;

	if (!o)
		return -ENOMEM;
	o->fmt = &s->fmt;
	o->bottom = s->args.bottom;
	outfd = openat(s->nl.parent_fd, s->nl.staging,
		       O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	err = outfd < 0 ? -errno : 0;
	if (err)
		fprintf(stderr, "lamina: squash: cannot open %s: %s\n",
			s->nl.staging_path, strerror(-err));
	if (!err) {
		o->progress = start_progress(s);
		err = layer_squash(s->layer_fds, s->args.cfg.nlower, outfd, o);
		progress_end(o->progress);
		if (err == -EPERM && geteuid() != 0)
			fprintf(
			    stderr,
			    "lamina: squash failed: %s; only root may give the new layer's files other owners than the user, so run squash as root\n",
			    o->error);
		else if (err && err != -EUCLEAN)
			fprintf(stderr, "lamina: squash failed: %s\n",
				o->error);
	}
	/* The layer must be on disk before its rename makes it NEWLAYER. */
	if (!err && syncfs(outfd) < 0) {
		err = -errno;
		fprintf(stderr,
			"lamina: squash: writing %s to disk failed: %s\n",
			s->nl.staging_path, strerror(-err));
	}
	if (outfd >= 0)
		close(outfd);
	free(o);
	return err;
}

/* Rename the finished staging directory to NEWLAYER. */
static int publish(struct squash_cmd *s)
{
	int err = 0;

	if (renameat2(s->nl.parent_fd, s->nl.staging, s->nl.parent_fd,
		      s->nl.name, RENAME_NOREPLACE) < 0)
		err = -errno;
	if (!err)
		err = layer_cmd_fsync_dir(s->nl.parent_fd, ".");
	if (err)
		fprintf(stderr, "lamina: squash: cannot rename %s to %s: %s\n",
			s->nl.staging_path, s->nl.path, strerror(-err));
	return err;
}

static int squash_run(struct squash_cmd *s)
{
	int err = open_layers(s);

	if (!err)
		err = make_staging(s);
	if (err)
		return EXIT_USAGE;
	err = squash_build(s);
	if (!err)
		err = publish(s);
	if (err) {
		ovl_remove_tree(s->nl.parent_fd, s->nl.staging);
		return EXIT_USAGE;
	}
	return 0;
}

int cmd_squash(int argc, char **argv)
{
	struct squash_cmd s = {0};
	int i, rc;

	s.nl.parent_fd = -1;
	s.nl.staging_fd = -1;
	/* The walk over the layers keeps a descriptor per level. */
	fdlimit_raise(NULL);
	rc = layer_cmd_parse(argc, argv, "squash", SQUASH_USAGE, true, &s.args);
	if (!rc)
		rc = squash_check(&s);
	if (!rc)
		rc = squash_run(&s);
	for (i = 0; s.layer_fds && i < s.args.cfg.nlower; i++)
		if (s.layer_fds[i] >= 0)
			close(s.layer_fds[i]);
	free(s.layer_fds);
	new_layer_close(&s.nl);
	ovl_config_free(&s.args.cfg);
	return rc;
}

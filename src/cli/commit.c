// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * lamina commit: turn the upper directory into a new read-only layer on
 * top of the lower ones and start again with an empty upper.
 */
#include "commit.h"
#include "cli.h"
#include "common/fdlimit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define COMMIT_USAGE                                                           \
	"lamina commit -o lowerdir=DIRS,upperdir=DIR,workdir=DIR NEWLAYER"

/* Open the upper's parent and decide how the layer is made. */
static int open_upper(struct commit *c)
{
	char parent[PATH_MAX], *slash;
	uint64_t upper_mnt = 0, parent_mnt = 0, new_mnt = 0;

	if (!realpath(c->args.cfg.upperdir, c->upper)) {
		fprintf(
		    stderr,
		    "lamina: commit: upperdir %s: %s; give the stack's upper directory\n",
		    c->args.cfg.upperdir, strerror(errno));
		return EXIT_USAGE;
	}
	if (!strcmp(c->upper, "/")) {
		fputs(
		    "lamina: commit: upperdir is the root directory, which commit cannot rename; use a directory below it\n",
		    stderr);
		return EXIT_USAGE;
	}
	snprintf(parent, sizeof(parent), "%s", c->upper);
	slash = strrchr(parent, '/');
	snprintf(c->upper_name, sizeof(c->upper_name), "%s", slash + 1);
	*(slash == parent ? slash + 1 : slash) = '\0';
	snprintf(c->fresh_name, sizeof(c->fresh_name),
		 ".%.*s.lamina-commit-upper", NAME_MAX - 30, c->upper_name);
	c->upper_parent_fd =
	    open(parent, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (c->upper_parent_fd < 0 ||
	    cli_mount_id(c->upper_parent_fd, "", &parent_mnt) ||
	    cli_mount_id(c->upper_parent_fd, c->upper_name, &upper_mnt) ||
	    cli_mount_id(c->nl.parent_fd, "", &new_mnt)) {
		fprintf(stderr, "lamina: commit: upperdir %s: %s\n", c->upper,
			strerror(errno));
		return EXIT_USAGE;
	}
	if (upper_mnt != parent_mnt) {
		fprintf(
		    stderr,
		    "lamina: commit: upperdir %s is a mount point, which commit cannot rename; use a directory inside that filesystem as upperdir\n",
		    c->upper);
		return EXIT_USAGE;
	}
	c->by_rename = new_mnt == parent_mnt;
	return 0;
}

static int open_workdir(struct commit *c)
{
	struct stat st;

	c->work_fd =
	    open(c->args.cfg.workdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->work_fd < 0) {
		fprintf(
		    stderr,
		    "lamina: commit: workdir %s: %s; give the stack's work directory\n",
		    c->args.cfg.workdir, strerror(errno));
		return EXIT_USAGE;
	}
	if (fstatat(c->work_fd, "work/incompat/volatile", &st,
		    AT_SYMLINK_NOFOLLOW) == 0) {
		fprintf(
		    stderr,
		    "lamina: commit: workdir %s: an earlier volatile mount did not end cleanly, so the upper may have lost writes; delete %s/work to commit it anyway\n",
		    c->args.cfg.workdir, c->args.cfg.workdir);
		return EXIT_USAGE;
	}
	return 0;
}

/*
 * Check that the commit can write in dirfd, the directory path, which is
 * the role given. A commit
 * that found out later would stop with the new layer written and the
 * upper still full, and fail the same way at every new run.
 */
static int check_writable(int dirfd, const char *path, const char *role)
{
	if (faccessat(dirfd, ".", W_OK, AT_EACCESS) == 0)
		return 0;
	if (errno == EROFS)
		fprintf(
		    stderr,
		    "lamina: commit: %s %s is on a read-only filesystem; remount it read-write, then run the commit\n",
		    role, path);
	else
		fprintf(
		    stderr,
		    "lamina: commit: cannot write in %s %s: %s; run the commit as a user who may write there\n",
		    role, path, strerror(errno));
	return EXIT_USAGE;
}

/* Check every directory that the commit changes. */
static int check_all_writable(struct commit *c)
{
	if (check_writable(c->upper_parent_fd, c->upper,
			   "the directory that contains upperdir"))
		return EXIT_USAGE;
	if (check_writable(c->work_fd, c->args.cfg.workdir, "workdir"))
		return EXIT_USAGE;
	return check_writable(c->nl.parent_fd, c->nl.path,
			      "the directory that will contain");
}

/* Every check that needs no change on disk. */
static int commit_check(struct commit *c)
{
	char why[PATH_MAX + 128];
	int i, rc;

	if (!c->args.cfg.upperdir) {
		fprintf(stderr,
			"lamina: commit: no upperdir given; usage: %s\n",
			COMMIT_USAGE);
		return EXIT_USAGE;
	}
	c->fmt.xattr_prefix =
	    c->args.cfg.userxattr ? "user.overlay." : "trusted.overlay.";
	rc = new_layer_open(&c->nl, c->args.newlayer, "commit");
	for (i = 0; !rc && i < c->args.cfg.nlower; i++)
		rc = layer_cmd_check_apart(&c->nl, c->args.cfg.lowerdirs[i],
					   "lowerdir");
	if (!rc)
		rc = layer_cmd_check_apart(&c->nl, c->args.cfg.upperdir,
					   "upperdir");
	if (!rc)
		rc = layer_cmd_check_apart(&c->nl, c->args.cfg.workdir,
					   "workdir");
	if (!rc)
		rc = layer_cmd_check_layers(&c->args.cfg, "commit");
	if (!rc)
		rc = open_upper(c);
	if (!rc)
		rc = open_workdir(c);
	if (!rc)
		rc = check_all_writable(c);
	if (rc)
		return rc;
	rc = cli_upper_lock(c->upper, &c->upper_lock_fd, why, sizeof(why));
	if (rc == CLI_UPPER_MOUNTED) {
		fprintf(stderr, "lamina: commit: %s; unmount it first\n", why);
		return EXIT_USAGE;
	}
	if (rc == CLI_UPPER_COMMITTING) {
		fprintf(
		    stderr,
		    "lamina: commit: another commit of upperdir %s is running; wait for it to end\n",
		    c->upper);
		return EXIT_USAGE;
	}
	if (rc < 0) {
		fprintf(stderr, "lamina: commit: upperdir %s: %s\n", c->upper,
			strerror(-rc));
		return EXIT_USAGE;
	}
	return 0;
}

static int commit_run(struct commit *c)
{
	int started = commit_state_lock(c);
	int err = 0;

	if (started < 0)
		return EXIT_USAGE;
	/* Before the record: a killed run does it again. A failure has
	 * been reported and changed nothing that a mount would show. */
	if (!started)
		err = commit_link_index_names(c);
	if (err)
		return EXIT_USAGE;
	err = commit_state_begin(c);

	if (err == COMMIT_FINISHED)
		return 0;
	if (err == -EEXIST || err == -EINVAL || err == -EBUSY)
		return EXIT_USAGE;
	if (err)
		return err;
	err = commit_move(c);
	if (!err)
		err = commit_clear_workdir(c);
	if (!err)
		err = commit_state_end(c);
	return err;
}

/* Print why a commit step failed. Running the command again finishes the
 * commit, but after a lack of space only once space has been freed. */
static void report_failure(const struct commit *c, int err)
{
	const char *slash = strrchr(c->nl.path, '/');
	int parent_len = slash == c->nl.path ? 1 : (int)(slash - c->nl.path);

	if (err != -ENOSPC && err != -EDQUOT) {
		fprintf(
		    stderr,
		    "lamina: commit of %s to %s failed: %s; run the same command again to finish it\n",
		    c->upper, c->nl.path, strerror(-err));
		return;
	}
	/* NOTE: a commit to another filesystem also makes the new empty
	 * upper beside the upper. When the upper's filesystem is the full
	 * one, this message names the wrong one. */
	fprintf(
	    stderr,
	    "lamina: commit of %s to %s failed: %s; free space on the filesystem that contains %.*s, then run the same command again to finish it\n",
	    c->upper, c->nl.path, strerror(-err), parent_len, c->nl.path);
}

int cmd_commit(int argc, char **argv)
{
	struct commit c = {.upper_parent_fd = -1,
			   .work_fd = -1,
			   .upper_lock_fd = -1,
			   .fresh_lock_fd = -1};
	int rc =
	    layer_cmd_parse(argc, argv, "commit", COMMIT_USAGE, false, &c.args);

	c.nl.parent_fd = -1;
	c.nl.staging_fd = -1;
	/* A copy to another filesystem keeps a descriptor per level. */
	fdlimit_raise(NULL);
	if (!rc)
		rc = commit_check(&c);
	if (!rc) {
		rc = commit_run(&c);
		if (rc < 0) {
			report_failure(&c, rc);
			rc = EXIT_USAGE;
		}
	}
	if (!rc)
		layer_cmd_print_lowerdir(c.nl.path, &c.args.cfg);
	new_layer_close(&c.nl);
	if (c.upper_parent_fd >= 0)
		close(c.upper_parent_fd);
	if (c.work_fd >= 0)
		close(c.work_fd);
	/* Closing them drops the locks. */
	if (c.upper_lock_fd >= 0)
		close(c.upper_lock_fd);
	if (c.fresh_lock_fd >= 0)
		close(c.fresh_lock_fd);
	ovl_config_free(&c.args.cfg);
	return rc;
}

// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The record of a commit in progress: the staging directory
 * .NAME.lamina-commit beside NEWLAYER contains a file "state" with the
 * upper's inode number, how the layer is made, and the upper's path.
 * The inode number tells a later run whether the old upper has already
 * been swapped with the new empty one, so that run can finish the
 * commit without doing any step twice. The run holds a flock on the
 * staging directory until it exits, so a later run finishes only the
 * commit of a run that is gone.
 */
#include "commit.h"
#include "cli.h"
#include "ovl/ovl.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_FILE "state"

static int write_state(struct commit *c, int tfd)
{
	char text[PATH_MAX + 64];
	int len, fd, err = 0;

	len = snprintf(text, sizeof(text), "%" PRIu64 " %s\n%s\n",
		       (uint64_t)c->upper_ino, c->by_rename ? "rename" : "copy",
		       c->upper);
	fd = openat(tfd, STATE_FILE ".new",
		    O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, text, (size_t)len) != len || fsync(fd) < 0)
		err = errno ? -errno : -EIO;
	close(fd);
	if (!err && renameat(tfd, STATE_FILE ".new", tfd, STATE_FILE) < 0)
		err = -errno;
	if (!err && fsync(tfd) < 0)
		err = -errno;
	return err;
}

/* Returns 0, -ENOENT when the state file is missing, or -EINVAL. */
static int read_state(struct commit *c, int tfd, char *upper, size_t size)
{
	char text[PATH_MAX + 64], how[16], *line;
	uint64_t ino;
	ssize_t n;
	int fd = openat(tfd, STATE_FILE, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return -EINVAL;
	text[n] = '\0';
	line = strchr(text, '\n');
	if (!line || sscanf(text, "%" SCNu64 " %15s", &ino, how) != 2)
		return -EINVAL;
	line++;
	line[strcspn(line, "\n")] = '\0';
	snprintf(upper, size, "%s", line);
	c->upper_ino = (ino_t)ino;
	c->by_rename = !strcmp(how, "rename");
	return 0;
}

/*
 * Remove a staging directory that contains no record. Either the run was
 * killed before it wrote one, and nothing moved, or it was killed while
 * it removed the record at the very end, and NEWLAYER is complete.
 * Returns 1 in the first case and COMMIT_FINISHED in the second.
 */
static int resume_without_record(struct commit *c)
{
	struct stat st;
	bool finished =
	    fstatat(c->nl.parent_fd, c->nl.name, &st, AT_SYMLINK_NOFOLLOW) == 0;
	int err;

	fprintf(stderr, "lamina: removing %s, which an interrupted commit %s\n",
		c->nl.staging_path,
		finished ? "left after it had finished"
			 : "left before it changed anything");
	err = ovl_remove_tree(c->nl.parent_fd, c->nl.staging);
	if (!err)
		err = layer_cmd_fsync_dir(c->nl.parent_fd, ".");
	if (err)
		return err;
	return finished ? COMMIT_FINISHED : 1;
}

/* Pick up the record an interrupted run left. Returns 0 when there is
 * one to finish, 1 when there was none (or only an empty start), and
 * COMMIT_FINISHED when the interrupted run had finished. */
static int resume(struct commit *c)
{
	char upper[PATH_MAX];
	int err;

	/* Only a record that commit_state_lock() locked is left by a run
	 * that is gone. */
	if (c->nl.staging_fd < 0)
		return 1;
	err = read_state(c, c->nl.staging_fd, upper, sizeof(upper));
	if (err == -ENOENT)
		return resume_without_record(c);
	if (err) {
		fprintf(
		    stderr,
		    "lamina: commit: %s/%s of an interrupted commit cannot be read; check %s and %s by hand, then remove %s\n",
		    c->nl.staging_path, STATE_FILE, c->upper, c->nl.path,
		    c->nl.staging_path);
		return -EINVAL;
	}
	if (strcmp(upper, c->upper)) {
		fprintf(
		    stderr,
		    "lamina: commit: an interrupted commit of upperdir %s to %s is unfinished; rerun it with upperdir=%s\n",
		    upper, c->nl.path, upper);
		return -EINVAL;
	}
	c->resumed = true;
	fprintf(stderr,
		"lamina: finishing the interrupted commit of %s to %s\n",
		c->upper, c->nl.path);
	return 0;
}

static void report_busy(const struct commit *c)
{
	fprintf(
	    stderr,
	    "lamina: commit: another commit to %s is running and holds %s; wait for it to end\n",
	    c->nl.path, c->nl.staging_path);
}

/* Returns 1 when an earlier run left its record, which is now locked, 0
 * when there is none, or a negative errno after printing why. */
int commit_state_lock(struct commit *c)
{
	int err = new_layer_lock_staging(&c->nl);

	if (err == -EBUSY)
		report_busy(c);
	else if (err < 0)
		fprintf(stderr, "lamina: commit: %s: %s\n", c->nl.staging_path,
			strerror(-err));
	return err;
}

/* Returns 0 when the commit is to be made or finished, COMMIT_FINISHED
 * when an interrupted run had already finished it, or a negative errno.
 * -EBUSY, -EEXIST and -EINVAL come after a message. */
int commit_state_begin(struct commit *c)
{
	struct stat st;
	int err = resume(c);

	if (err <= 0 || err == COMMIT_FINISHED)
		return err;
	if (fstatat(c->nl.parent_fd, c->nl.name, &st, AT_SYMLINK_NOFOLLOW) ==
	    0) {
		fprintf(
		    stderr,
		    "lamina: commit: NEWLAYER %s already exists; give the path of a new directory\n",
		    c->nl.path);
		return -EEXIST;
	}
	if (fstatat(c->upper_parent_fd, c->upper_name, &st,
		    AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	c->upper_ino = st.st_ino;
	err = new_layer_make_staging(&c->nl);
	if (err == -EBUSY)
		report_busy(c);
	if (!err)
		err = write_state(c, c->nl.staging_fd);
	if (!err)
		err = layer_cmd_fsync_dir(c->nl.parent_fd, ".");
	return err;
}

/* The commit is complete: drop its record. */
int commit_state_end(struct commit *c)
{
	int err = ovl_remove_tree(c->nl.parent_fd, c->nl.staging);

	if (!err)
		err = layer_cmd_fsync_dir(c->nl.parent_fd, ".");
	return err;
}

// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Before a commit, every name of a hard-linked lower file in the index
 * gets a link in the upper. While the index exists, a name that was
 * never copied up reads the index entry. A commit removes the index, and
 * such a name would then read the lower file again, without the changes
 * made through the file's other names.
 */
#include "commit.h"
#include "cli.h"
#include "ovl/ovl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * A lower file that the index holds. Its handle names a filesystem, not a
 * layer, so each lower layer on that filesystem is searched for it.
 */
struct indexed {
	dev_t dev;
	ino_t ino;
};

struct link_walk {
	struct ovl_fs *fs;
	struct indexed *files;
	size_t count;
	int layer;		 /* the layer being walked */
	char path[OVL_PATH_MAX]; /* of the entry, relative to the layer */
};

static int add_indexed(struct link_walk *w, const struct stat *st)
{
	struct indexed *more =
	    realloc(w->files, (w->count + 1) * sizeof(*w->files));

	if (!more)
		return -ENOMEM;
	w->files = more;
	w->files[w->count++] =
	    (struct indexed){.dev = st->st_dev, .ino = st->st_ino};
	return 0;
}

/* Note the lower file of each index entry that has several names. */
static int collect_indexed(struct link_walk *w)
{
	int fd = openat(w->fs->index_fd, ".",
			O_RDONLY | O_DIRECTORY | O_CLOEXEC),
	    layer, err = 0;
	struct dirent *d;
	struct stat st;
	DIR *dir;

	if (fd < 0)
		return -errno;
	dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return -errno;
	}
	while (!err && (d = readdir(dir))) {
		/* Names starting with '#' are whiteouts of removed files. */
		if (d->d_name[0] == '.' || d->d_name[0] == '#')
			continue;
		if (ovl_origin_stat(w->fs, fd, d->d_name, &layer, &st) == 0 &&
		    S_ISREG(st.st_mode) && st.st_nlink > 1)
			err = add_indexed(w, &st);
	}
	closedir(dir);
	return err;
}

static bool is_indexed(const struct link_walk *w, const struct stat *st)
{
	size_t i;

	for (i = 0; i < w->count; i++)
		if (w->files[i].ino == st->st_ino &&
		    w->files[i].dev == st->st_dev)
			return true;
	return false;
}

/* Return whether node, looked up in the merged tree, is lower file st. */
static bool shows_lower(struct ovl_fs *fs, struct ovl_node *node, int layer,
			const struct stat *st)
{
	struct ovl_path path;
	struct stat real;
	bool same = false;

	if (ovl_node_has(node, OVL_N_UPPER) || node->lower != layer ||
	    ovl_node_open_parent(fs, node, layer, &path))
		return false;
	if (!ovl_do_fstatat(path.dirfd, path.name, &real))
		same = real.st_ino == st->st_ino && real.st_dev == st->st_dev;
	ovl_path_close(&path);
	return same;
}

/*
 * Look up w->path in the merged tree. Where it shows the lower file st,
 * copy it up, which links it to the index entry. A name that is hidden
 * or replaced in the merged tree is left alone.
 */
static int link_name(struct link_walk *w, const struct stat *st)
{
	struct ovl_fs *fs = w->fs;
	struct ovl_node *node = fs->root, *child;
	char path[OVL_PATH_MAX], *save = NULL, *part;
	struct stat merged;
	int err = 0;

	snprintf(path, sizeof(path), "%s", w->path);
	for (part = strtok_r(path, "/", &save); part;
	     part = strtok_r(NULL, "/", &save)) {
		err = ovl_lookup_node(fs, node, part, &child, &merged);
		if (node != fs->root)
			ovl_node_forget(fs, node, 1);
		if (err)
			return err == -ENOENT || err == -ENOTDIR ? 0 : err;
		node = child;
	}
	if (node != fs->root && shows_lower(fs, node, w->layer, st))
		err = ovl_copy_up(fs, node, OVL_COPY_UP_META);
	if (node != fs->root)
		ovl_node_forget(fs, node, 1);
	return err;
}

static int walk_dir(struct link_walk *w, int dirfd, size_t len);

/* Visit one entry of a lower directory; w->path ends in its name. */
static int walk_entry(struct link_walk *w, int dirfd, const char *name,
		      size_t len)
{
	struct stat st;
	int fd, err;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (S_ISREG(st.st_mode) && st.st_nlink > 1 && is_indexed(w, &st))
		return link_name(w, &st);
	if (!S_ISDIR(st.st_mode))
		return 0;
	fd = openat(dirfd, name,
		    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	err = walk_dir(w, fd, len);
	close(fd);
	return err;
}

/* Walk a lower directory, whose path in the layer is w->path[0..len). */
static int walk_dir(struct link_walk *w, int dirfd, size_t len)
{
	int fd = dup(dirfd), err = 0;
	struct dirent *d;
	DIR *dir;

	if (fd < 0)
		return -errno;
	dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return -errno;
	}
	while (!err && (d = readdir(dir))) {
		size_t end;

		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
			continue;
		end = len + (len ? 1 : 0) + strlen(d->d_name);
		if (end >= sizeof(w->path)) {
			err = -ENAMETOOLONG;
			break;
		}
		snprintf(w->path + len, sizeof(w->path) - len, "%s%s",
			 len ? "/" : "", d->d_name);
		err = walk_entry(w, dirfd, d->d_name, end);
	}
	closedir(dir);
	w->path[len] = '\0';
	return err;
}

/* Walk each lower layer on the filesystem of an indexed file. */
static int link_all(struct link_walk *w)
{
	int layer, fd, err = 0;
	size_t i;

	for (layer = w->fs->first_lower; !err && layer < w->fs->nlayers;
	     layer++) {
		for (i = 0; i < w->count &&
			    w->files[i].dev != w->fs->layers[layer].dev;
		     i++)
			;
		if (i == w->count)
			continue;
		fd = openat(w->fs->layers[layer].fd, ".",
			    O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		w->layer = layer;
		w->path[0] = '\0';
		err = walk_dir(w, fd, 0);
		close(fd);
	}
	return err;
}

/* Set up the stack as a mount would, without FUSE, and link the names. */
static int link_with_engine(struct commit *c, struct ovl_fs *fs)
{
	struct link_walk w = {.fs = fs};
	struct ovl_error e = {{0}};
	int err;

	if (ovl_fs_setup(fs, &e)) {
		fprintf(stderr, "lamina: commit: %s\n", e.msg);
		return -EINVAL;
	}
	err = fs->index_fd < 0 ? 0 : collect_indexed(&w);
	if (!err && w.count)
		err = link_all(&w);
	if (err)
		fprintf(
		    stderr,
		    "lamina: commit: linking the names of hard-linked files in %s/index into the upper failed at %s: %s\n",
		    c->args.cfg.workdir, w.path[0] ? w.path : "the start",
		    strerror(-err));
	free(w.files);
	return err;
}

int commit_link_index_names(struct commit *c)
{
	bool index = c->args.cfg.index, index_set = c->args.cfg.index_set;
	struct ovl_fs *fs;
	struct stat st;
	int err;

	if (fstatat(c->work_fd, "index", &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	/* The engine borrows the parsed options and gives them back. */
	fs->config = c->args.cfg;
	fs->config.index = true;
	fs->config.index_set = true;
	err = link_with_engine(c, fs);
	c->args.cfg = fs->config;
	c->args.cfg.index = index;
	c->args.cfg.index_set = index_set;
	memset(&fs->config, 0, sizeof(fs->config));
	ovl_fs_teardown(fs);
	free(fs);
	return err;
}

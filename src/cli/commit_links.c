// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Before a commit, every name of a hard-linked lower file in the index
 * gets a link in the upper, symlinks, device nodes, FIFOs and sockets
 * included. While the index exists, a name that was never copied up
 * reads the index entry. A commit removes the index, and such a name
 * would then read the lower file again, without the changes made through
 * the file's other names.
 *
 * The names are found by a walk of the merged tree, as a mount shows it,
 * so that names under moved directories are found and hidden ones left
 * alone. Entries too deep for a mount to reach are left alone too.
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

struct link_walk {
	struct ovl_fs *fs;
	char path[OVL_PATH_MAX + 2]; /* of the entry, in the merged tree */
};

/* Return whether the index contains an entry of a file. */
static bool index_has_entries(struct ovl_fs *fs)
{
	int fd = openat(fs->index_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct dirent *d;
	bool found = false;
	DIR *dir;

	if (fd < 0)
		return true; /* let the walk find out */
	dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return true;
	}
	/* Names starting with '#' are whiteouts of removed files. */
	while (!found && (d = readdir(dir)))
		found = d->d_name[0] != '.' && d->d_name[0] != '#';
	closedir(dir);
	return found;
}

/* Copy up node if it is a lower name of a file in the index, which links
 * it to the entry. */
static int link_if_indexed(struct ovl_fs *fs, struct ovl_node *node)
{
	if (node->type == S_IFDIR || ovl_node_has(node, OVL_N_UPPER) ||
	    !ovl_node_has(node, OVL_N_LINKED))
		return 0;
	ovl_index_refresh(fs, node);
	if (!ovl_node_has(node, OVL_N_INDEX))
		return 0;
	return ovl_copy_up(fs, node, OVL_COPY_UP_META);
}

static int walk_dir(struct link_walk *w, struct ovl_node *dirnode, size_t len);

/* Visit one merged entry; w->path ends in its name. */
static int walk_entry(struct link_walk *w, struct ovl_node *dirnode,
		      const struct ovl_dirent *d, size_t len)
{
	struct ovl_node *node;
	struct stat st;
	int err;

	err = ovl_lookup_node(w->fs, dirnode, d->name, &node, &st);
	if (err)
		return err == -ENOENT || err == -ENAMETOOLONG ? 0 : err;
	/* A directory without a lower part may contain a moved one. */
	if (S_ISDIR(st.st_mode))
		err = walk_dir(w, node, len);
	else
		err = link_if_indexed(w->fs, node);
	ovl_node_forget(w->fs, node, 1);
	return err;
}

/* Walk a merged directory, whose path is w->path[0..len). */
static int walk_dir(struct link_walk *w, struct ovl_node *dirnode, size_t len)
{
	struct ovl_dir *dir = ovl_dir_new();
	size_t i, end;
	int err;

	if (!dir)
		return -ENOMEM;
	err = ovl_dir_load(w->fs, dirnode, dir, true);
	if (err == -ENAMETOOLONG)
		err = 0;
	for (i = 0; !err && i < dir->count; i++) {
		const struct ovl_dirent *d = &dir->entries[i];

		if (!strcmp(d->name, ".") || !strcmp(d->name, ".."))
			continue;
		/* The path is for messages; a deeper one is cut short. */
		snprintf(w->path + len, sizeof(w->path) - len, "/%s", d->name);
		end = strlen(w->path);
		err = walk_entry(w, dirnode, d, end);
	}
	if (!err)
		w->path[len] = '\0';
	ovl_dir_put(dir);
	return err;
}

/* Set up the stack as a mount would, without FUSE, and link the names. */
static int link_with_engine(struct commit *c, struct ovl_fs *fs)
{
	struct link_walk w = {.fs = fs};
	struct ovl_error e = {{0}};
	int err;

	if (ovl_fs_setup(fs, &e)) {
		fprintf(
		    stderr,
		    "lamina: commit: %s (commit reads the index of %s to keep the names of hard-linked files)\n",
		    e.msg, c->args.cfg.workdir);
		return -EINVAL;
	}
	if (fs->index_fd < 0 || !index_has_entries(fs))
		return 0;
	err = walk_dir(&w, fs->root, 0);
	if (err)
		fprintf(
		    stderr,
		    "lamina: commit: linking the names of hard-linked files in %s/index into the upper failed at %s: %s\n",
		    c->args.cfg.workdir, w.path[0] ? w.path : "/",
		    strerror(-err));
	return err;
}

int commit_link_index_names(struct commit *c)
{
	bool index = c->args.cfg.index, index_set = c->args.cfg.index_set;
	bool metacopy = c->args.cfg.metacopy;
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
	/* Metacopy files in the upper find their data as in a mount. */
	fs->config.metacopy =
	    !fs->config.userxattr && fs->config.redirect == OVL_REDIRECT_ON;
	/* cli_upper_lock() took the lock that a mount would take. */
	fs->upper_locked = true;
	err = link_with_engine(c, fs);
	c->args.cfg = fs->config;
	c->args.cfg.index = index;
	c->args.cfg.index_set = index_set;
	c->args.cfg.metacopy = metacopy;
	memset(&fs->config, 0, sizeof(fs->config));
	ovl_fs_teardown(fs);
	free(fs);
	return err;
}

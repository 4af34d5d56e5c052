// SPDX-License-Identifier: GPL-2.0-or-later
/* Open directories: READDIR and READDIRPLUS over the merged listing. */
#include "ops.h"
#include "../common/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct ovl_dir *dir_of(const struct fuse_file_info *fi)
{
	return (struct ovl_dir *)(uintptr_t)fi->fh;
}

void ovl_op_opendir(struct fuse_req *req, uint64_t nodeid,
		    struct fuse_file_info *fi)
{
	struct ovl_dir *dir;

	(void)nodeid;
	/*
	 * Where the kernel allows it, it opens directories without asking
	 * and keeps their listings itself; READDIR then comes without a
	 * handle and the listing hangs off the node.
	 */
	if (ovl_req_fs(req)->no_opendir) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	dir = ovl_dir_new();
	if (!dir) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fi->fh = (uintptr_t)dir;
	/*
	 * The listing only changes through this mount, which notifies the
	 * kernel of each change, so the kernel may keep it between opens.
	 */
	fi->cache_dir = true;
	fi->keep_cache = true;
	fuse_reply_open(req, fi);
}

/* The listing of a directory read without a handle, with a reference. */
static struct ovl_dir *node_listing(struct ovl_node *node)
{
	struct ovl_dir *dir;

	pthread_mutex_lock(&node->lock);
	if (!node->listing)
		node->listing = ovl_dir_new();
	dir = node->listing;
	if (dir)
		atomic_fetch_add(&dir->refs, 1);
	pthread_mutex_unlock(&node->lock);
	return dir;
}

/* Free a node's listing once read to the end; offset 0 builds it again. */
static void node_listing_done(struct ovl_node *node, struct ovl_dir *dir)
{
	pthread_mutex_lock(&node->lock);
	if (node->listing == dir) {
		node->listing = NULL;
		ovl_dir_put(dir);
	}
	pthread_mutex_unlock(&node->lock);
}

static bool is_dot_or_dotdot(const char *name)
{
	return name[0] == '.' &&
	       (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'));
}

/*
 * Add one entry with its attributes, and the kernel takes a lookup on it.
 * An entry that the kernel has a node for already goes without them
 * (node ID 0), so the kernel keeps its own entry and attributes, and the
 * daemon skips a stat of the file.
 */
static bool add_plus(struct ovl_fs *fs, struct ovl_node *dirnode,
		     struct fuse_dirbuf *db, const struct ovl_dirent *d,
		     off_t next)
{
	struct fuse_entry e;
	struct ovl_node *node = NULL;
	struct stat st;

	memset(&e, 0, sizeof(e));
	if (!is_dot_or_dotdot(d->name)) {
		node = ovl_node_peek(fs, dirnode, d->name);
		if (node)
			ovl_node_put(fs, node);
	}
	if (is_dot_or_dotdot(d->name) || node) {
		e.attr.st_ino = d->ino;
		e.attr.st_mode = DTTOIF(d->type);
		return fuse_dirbuf_add_plus(db, d->name, &e, next);
	}
	if (ovl_lookup_node(fs, dirnode, d->name, &node, &st)) {
		/* Gone or unreadable: list it without attributes. */
		e.attr.st_ino = d->ino;
		e.attr.st_mode = DTTOIF(d->type);
		return fuse_dirbuf_add_plus(db, d->name, &e, next);
	}
	ovl_fill_entry(fs, &e, node, &st);
	if (fuse_dirbuf_add_plus(db, d->name, &e, next))
		return true;
	ovl_node_forget(fs, node, 1); /* did not fit: no reference */
	return false;
}

static void fill_listing(struct ovl_fs *fs, struct ovl_node *node,
			 struct ovl_dir *dir, struct fuse_dirbuf *db,
			 size_t start, bool plus)
{
	size_t i;

	/* Every entry's lookup opens this directory in each layer. */
	if (plus) {
		ovl_dircache_begin(fs);
		ovl_prefetch_begin();
	}
	for (i = start; i < dir->count; i++) {
		const struct ovl_dirent *d = &dir->entries[i];
		bool fit;

		if (plus)
			fit = add_plus(fs, node, db, d, i + 1);
		else
			fit = fuse_dirbuf_add(db, d->name, d->ino, d->type,
					      i + 1);
		if (!fit)
			break;
	}
	if (plus) {
		ovl_dircache_end();
		ovl_prefetch_end(fs);
	}
}

void ovl_op_readdir(struct fuse_req *req, uint64_t nodeid, size_t size,
		    off_t off, bool plus, struct fuse_file_info *fi)
{
	struct ovl_fs *fs = ovl_req_fs(req);
	struct ovl_node *node = ovl_req_node(req, nodeid);
	struct ovl_dir *dir = fi->fh ? dir_of(fi) : node_listing(node);
	bool ahead = ovl_readahead_is_reader(fs, fuse_req_ctx(req)->pid);
	struct fuse_dirbuf db;
	unsigned int renumbered;
	int err = 0;

	if (!dir || fuse_dirbuf_init(&db, size)) {
		if (dir && !fi->fh)
			ovl_dir_put(dir);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* Hold the node across the reply, because once the kernel has the
	 * reply a FORGET may free the node before the listing is released. */
	if (!fi->fh)
		ovl_node_get(node);
	pthread_mutex_lock(&dir->lock);
	/* Offset 0 starts over, as rewinddir() does on any filesystem. */
	if (off == 0 || !dir->loaded)
		err = ovl_dir_load(fs, node, dir, ahead);
	if (!err && off >= 0 && (size_t)off < dir->count)
		fill_listing(fs, node, dir, &db, off, plus);
	renumbered = dir->renumbered;
	pthread_mutex_unlock(&dir->lock);
	if (err)
		ovl_reply_status(req, err);
	else
		fuse_reply_buf(req, db.data, db.size);
	/*
	 * If a copy-up gave a file a new st_ino after this listing was read,
	 * its own invalidation may reach the kernel before this reply, which
	 * the kernel would then keep: drop the kernel's copy once more. The
	 * count is read after the reply, so a copy-up counted later sends
	 * its invalidation later too.
	 */
	if (!err)
		fuse_inval_after_reply(req, nodeid, &fs->renumbered,
				       renumbered);
	if (!fi->fh) {
		if (err || db.size == 0)
			node_listing_done(node, dir);
		ovl_dir_put(dir);
		ovl_node_put(fs, node);
	}
	fuse_dirbuf_free(&db);
}

void ovl_op_releasedir(struct fuse_req *req, uint64_t nodeid,
		       struct fuse_file_info *fi)
{
	(void)nodeid;
	ovl_dir_put(dir_of(fi));
	fuse_reply_err(req, 0);
}

void ovl_op_fsyncdir(struct fuse_req *req, uint64_t nodeid, bool datasync,
		     struct fuse_file_info *fi)
{
	struct ovl_fs *fs = ovl_req_fs(req);
	struct ovl_node *node = ovl_req_node(req, nodeid);
	int fd, err = 0;

	(void)fi;
	if (fs->config.volatile_mount || !ovl_node_has(node, OVL_N_UPPER)) {
		fuse_reply_err(req, 0);
		return;
	}
	fd = ovl_node_open_dir(fs, node, 0, O_RDONLY);
	if (fd < 0) {
		ovl_reply_status(req, fd);
		return;
	}
	if ((datasync ? fdatasync(fd) : fsync(fd)) < 0)
		err = errno;
	close(fd);
	fuse_reply_err(req, err);
}

// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * rename(2) with RENAME_NOREPLACE and RENAME_EXCHANGE. Both names are
 * copied up first. A lower entry left behind at the old name is hidden
 * by a whiteout, made in the same rename (RENAME_WHITEOUT) where the
 * upper filesystem supports it.
 *
 * A directory that a lower layer contains cannot move, because lamina
 * does not write redirects. Such a rename returns EXDEV, as overlayfs
 * does with redirect_dir=off, and mv falls back to copying.
 */
#include "ops.h"
#include "../common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct rename_ctx {
	struct ovl_fs *fs;
	struct ovl_node *oldparent, *newparent;
	const char *oldname, *newname;
	unsigned int flags;
	struct ovl_lookup old, new;
	bool new_exists;
	int olddir, newdir; /* upper directories, O_PATH */
};

/* Copy up the entry at (parent, name), through its node if it has one. */
static int copy_up_name(struct ovl_fs *fs, struct ovl_node *parent,
			const char *name, const struct ovl_lookup *res)
{
	struct ovl_node *node = ovl_node_peek(fs, parent, name);
	int err;

	if (!node) {
		node = ovl_node_new(fs, parent, name);
		if (!node)
			return -ENOMEM;
		ovl_node_fill(node, res);
	}
	err = ovl_copy_up(fs, node, 0);
	ovl_node_put(fs, node);
	return err;
}

static bool may_move(const struct ovl_lookup *res)
{
	return !S_ISDIR(res->st.st_mode) || (res->upper && res->lower < 0);
}

static int rename_check(struct rename_ctx *c)
{
	int err;

	if (c->flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return -EINVAL;
	if (!c->fs->upper)
		return -EROFS;
	err = ovl_lookup_name(c->fs, c->oldparent, c->oldname, &c->old);
	if (err)
		return err;
	err = ovl_lookup_name(c->fs, c->newparent, c->newname, &c->new);
	if (err && err != -ENOENT)
		return err;
	c->new_exists = !err;
	if ((c->flags & RENAME_NOREPLACE) && c->new_exists)
		return -EEXIST;
	if ((c->flags & RENAME_EXCHANGE) && !c->new_exists)
		return -ENOENT;
	if (!may_move(&c->old))
		return -EXDEV;
	if ((c->flags & RENAME_EXCHANGE) && !may_move(&c->new))
		return -EXDEV;
	return 0;
}

/* The replaced directory must be empty in the merged view. */
static int check_target_empty(struct rename_ctx *c)
{
	struct ovl_node *tmp;
	int err;

	if (!c->new_exists || (c->flags & RENAME_EXCHANGE) ||
	    !S_ISDIR(c->new.st.st_mode))
		return 0;
	tmp = ovl_node_new(c->fs, c->newparent, c->newname);
	if (!tmp)
		return -ENOMEM;
	ovl_node_fill(tmp, &c->new);
	err = ovl_dir_is_empty(c->fs, tmp);
	ovl_node_put(c->fs, tmp);
	if (err < 0)
		return err;
	return err ? 0 : -ENOTEMPTY;
}

static int open_upper_dirs(struct rename_ctx *c)
{
	int err = ovl_copy_up(c->fs, c->oldparent, 0);

	if (!err)
		err = ovl_copy_up(c->fs, c->newparent, 0);
	if (err)
		return err;
	c->olddir = ovl_node_open_dir(c->fs, c->oldparent, 0, O_PATH);
	if (c->olddir < 0)
		return c->olddir;
	c->newdir = ovl_node_open_dir(c->fs, c->newparent, 0, O_PATH);
	return c->newdir < 0 ? c->newdir : 0;
}

/*
 * An upper directory that moves below a merged parent could merge with
 * a lower directory of the same name there; opaque="y" prevents it.
 */
static int mark_moved_dir(struct rename_ctx *c, int dirfd, const char *name,
			  const struct ovl_lookup *res,
			  struct ovl_node *dest_parent, bool over_whiteout)
{
	bool merged_dest = dest_parent->lower >= 0 &&
			   !ovl_node_has(dest_parent, OVL_N_OPAQUE);

	if (!S_ISDIR(res->st.st_mode) || res->opaque)
		return 0;
	if (!merged_dest && !over_whiteout)
		return 0;
	return ovl_set_opaque(c->fs, dirfd, name);
}

/*
 * Replace the target's upper directory, which contains whiteouts, with
 * an empty opaque one, so that the rename over it can succeed.
 */
static int clear_target_dir(struct rename_ctx *c)
{
	char tmp[64];
	int err;

	ovl_tmpname(c->fs, tmp, sizeof(tmp));
	if (mkdirat(c->fs->work_fd, tmp, 0700) < 0)
		return -errno;
	err = ovl_set_opaque(c->fs, c->fs->work_fd, tmp);
	if (!err)
		err = ovl_do_rename(c->fs->work_fd, tmp, c->newdir, c->newname,
				    RENAME_EXCHANGE);
	ovl_remove_tree(c->fs->work_fd, tmp);
	return err;
}

static int rename_exchange(struct rename_ctx *c)
{
	int err = mark_moved_dir(c, c->olddir, c->oldname, &c->old,
				 c->newparent, false);

	if (!err)
		err = mark_moved_dir(c, c->newdir, c->newname, &c->new,
				     c->oldparent, false);
	if (!err)
		err = ovl_do_rename(c->olddir, c->oldname, c->newdir,
				    c->newname, RENAME_EXCHANGE);
	return err;
}

static int rename_move(struct rename_ctx *c, bool old_lower)
{
	bool is_dir = S_ISDIR(c->old.st.st_mode);
	unsigned int flags = 0;
	int err;

	err = mark_moved_dir(c, c->olddir, c->oldname, &c->old, c->newparent,
			     c->new.upper_whiteout);
	if (err)
		return err;
	if (is_dir && c->new.upper_whiteout) {
		/* A directory cannot replace the whiteout: swap them. */
		err = ovl_do_rename(c->olddir, c->oldname, c->newdir,
				    c->newname, RENAME_EXCHANGE);
		if (!err && !old_lower && unlinkat(c->olddir, c->oldname, 0))
			err = -errno;
		return err;
	}
	if (old_lower && c->fs->rename_whiteout)
		flags = RENAME_WHITEOUT;
	err = ovl_do_rename(c->olddir, c->oldname, c->newdir, c->newname,
			    flags);
	if (err == -ENOTEMPTY && c->new.upper) {
		err = clear_target_dir(c);
		if (!err)
			err = ovl_do_rename(c->olddir, c->oldname, c->newdir,
					    c->newname, flags);
	}
	if (!err && old_lower && !flags)
		err = ovl_whiteout_create(c->fs, c->olddir, c->oldname);
	return err;
}

/*
 * A copied-up file moved into a directory makes it impure, as in
 * overlayfs: readdir there must look up origins to report st_ino.
 */
static void mark_impure(struct rename_ctx *c, int dirfd, const char *name)
{
	char origin[64], impure[64];

	ovl_xattr_name(c->fs, origin, sizeof(origin), "origin");
	ovl_xattr_name(c->fs, impure, sizeof(impure), "impure");
	if (ovl_do_getxattr(dirfd, name, origin, NULL, 0) < 0 ||
	    ovl_do_getxattr(dirfd, ".", impure, NULL, 0) >= 0)
		return;
	if (ovl_do_setxattr(dirfd, ".", impure, "y", 1, 0))
		log_warn_rl("marking the directory of %s impure failed", name);
}

static int do_rename(struct rename_ctx *c)
{
	bool exchange = c->flags & RENAME_EXCHANGE;
	int old_lower, err;

	err = rename_check(c);
	if (!err)
		err = check_target_empty(c);
	if (!err)
		err = copy_up_name(c->fs, c->oldparent, c->oldname, &c->old);
	if (!err && exchange)
		err = copy_up_name(c->fs, c->newparent, c->newname, &c->new);
	if (err)
		return err;
	old_lower = c->old.lower >= 0
			    ? 1
			    : ovl_lower_positive(c->fs, c->oldparent,
						 c->oldname);
	if (old_lower < 0)
		return old_lower;
	err = open_upper_dirs(c);
	if (!err)
		err = exchange ? rename_exchange(c) : rename_move(c, old_lower);
	if (!err)
		mark_impure(c, c->newdir, c->newname);
	if (!err && exchange)
		mark_impure(c, c->olddir, c->oldname);
	if (!err)
		err = ovl_node_rename(c->fs, c->oldparent, c->oldname,
				      c->newparent, c->newname, exchange);
	return err;
}

void ovl_op_rename(struct fuse_req *req, uint64_t parent, const char *name,
		   uint64_t newparent, const char *newname,
		   unsigned int flags)
{
	struct rename_ctx c = {
		.fs = ovl_req_fs(req),
		.oldparent = ovl_req_node(req, parent),
		.newparent = ovl_req_node(req, newparent),
		.oldname = name,
		.newname = newname,
		.flags = flags,
		.olddir = -1,
		.newdir = -1,
	};
	int err = do_rename(&c);

	if (c.olddir >= 0)
		close(c.olddir);
	if (c.newdir >= 0)
		close(c.newdir);
	fuse_reply_err(req, -err);
}

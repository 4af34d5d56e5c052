// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Lookup: find a name in the upper layer, then in the lowers from the
 * top down, as overlayfs does. A whiteout hides the name, a non-directory
 * ends the search, and an opaque directory ends the merging below it.
 */
#include "ovl.h"
#include "../common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The fixed part of overlayfs's origin file handle (struct ovl_fb). */
struct ovl_fb_header {
	uint8_t version; /* 0 */
	uint8_t magic;	 /* 0xfb */
	uint8_t len;	 /* header plus fid */
	uint8_t flags;
	uint8_t type; /* exportfs fid type */
	uint8_t uuid[16];
} __attribute__((packed));

#define OVL_FH_MAGIC 0xfb
#define FILEID_INO32_GEN 1
#define FILEID_INO32_GEN_PARENT 2
#define FILEID_INO64_GEN 0x81 /* XFS with 64-bit inode numbers */

/* The first layer on the filesystem with this UUID, or -1. */
static int uuid_layer(struct ovl_fs *fs, const uint8_t *uuid)
{
	int i;

	for (i = 0; i < fs->nlayers; i++)
		if (fs->layers[i].has_uuid &&
		    !memcmp(fs->layers[i].uuid, uuid, 16))
			return i;
	return -1;
}

/*
 * xino: a FUSE mount has one st_dev for all its files, so inode numbers
 * from layers on different filesystems could collide. The layer's
 * filesystem number goes into the high bits, as in overlayfs. An inode
 * number that already uses those bits is left as it is.
 */
ino_t ovl_xino(struct ovl_fs *fs, int layer, ino_t ino)
{
	uint64_t fsid = fs->layers[layer].fsid;

	if (!fs->xino_shift || !fsid)
		return ino;
	if ((uint64_t)ino >> fs->xino_shift) {
		log_warn_rl(
		    "inode number %llu of layer %s is too large for xino",
		    (unsigned long long)ino, fs->layers[layer].path);
		return ino;
	}
	return ino | (fsid << fs->xino_shift);
}

/*
 * Open what an origin handle names in its layer. This needs
 * CAP_DAC_READ_SEARCH, which root has, and a descriptor of the layer
 * that is not O_PATH.
 */
static int origin_open(struct ovl_fs *fs, int layer,
		       const struct ovl_fb_header *fb, const uint8_t *fid,
		       int len)
{
	struct {
		struct file_handle fh;
		unsigned char bytes[MAX_HANDLE_SZ];
	} h;
	size_t bytes = len - sizeof(*fb);
	int mount_fd = fs->layers[layer].handle_fd, fd;

	if (bytes > MAX_HANDLE_SZ)
		return -EINVAL;
	h.fh.handle_bytes = bytes;
	h.fh.handle_type = fb->type;
	memcpy(h.fh.f_handle, fid, bytes);
	if (mount_fd < 0)
		mount_fd = openat(fs->layers[layer].fd, ".",
				  O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (mount_fd < 0)
		return -errno;
	fd = open_by_handle_at(mount_fd, &h.fh, O_PATH | O_CLOEXEC);
	if (fd < 0)
		fd = -errno;
	if (mount_fd != fs->layers[layer].handle_fd)
		close(mount_fd);
	return fd;
}

/* Read the origin handle of an upper entry into buf; return its length,
 * or -1. */
static int origin_read(struct ovl_fs *fs, int dirfd, const char *name,
		       uint8_t *buf, size_t size, int *layer)
{
	const struct ovl_fb_header *fb = (const void *)buf;
	char attr[64];
	int n;

	ovl_xattr_name(fs, attr, sizeof(attr), "origin");
	n = ovl_do_getxattr(dirfd, name, attr, buf, size);
	if (n < (int)sizeof(*fb) + 4 || fb->magic != OVL_FH_MAGIC ||
	    fb->len != n)
		return -1;
	*layer = uuid_layer(fs, fb->uuid);
	return *layer < 0 ? -1 : n;
}

/* Stat the origin's file in its layer. */
static int origin_stat(struct ovl_fs *fs, int layer, const uint8_t *buf,
		       int len, struct stat *st)
{
	const struct ovl_fb_header *fb = (const void *)buf;
	int fd = origin_open(fs, layer, fb, buf + sizeof(*fb), len), err;

	if (fd < 0)
		return fd;
	err = fstat(fd, st) < 0 ? -errno : 0;
	close(fd);
	return err;
}

/*
 * Decode the inode number from an origin handle of layer, read into buf
 * (n bytes). Handles whose fid layout is not known give the fallback.
 */
static ino_t origin_handle_ino(struct ovl_fs *fs, int layer, const uint8_t *buf,
			       int n, ino_t fallback)
{
	const uint8_t *fid = buf + sizeof(struct ovl_fb_header);
	const struct ovl_fb_header *fb = (const void *)buf;
	struct stat st;
	uint32_t ino32;
	uint64_t ino64;

	if (!fs->layers[layer].fid_has_ino)
		return origin_stat(fs, layer, buf, n, &st) || !st.st_ino
			   ? fallback
			   : ovl_xino(fs, layer, st.st_ino);
	switch (fb->type) {
	case FILEID_INO32_GEN:
	case FILEID_INO32_GEN_PARENT:
		memcpy(&ino32, fid, 4);
		return ovl_xino(fs, layer, ino32);
	case FILEID_INO64_GEN:
		if (n < (int)sizeof(*fb) + 8)
			return fallback;
		memcpy(&ino64, fid, 8);
		return ovl_xino(fs, layer, ino64);
	default:
		return fallback;
	}
}

/* Stat the lower file that overlay.origin of dirfd/name names. */
int ovl_origin_stat(struct ovl_fs *fs, int dirfd, const char *name,
		    struct stat *st)
{
	uint8_t buf[256];
	int n, layer;

	n = origin_read(fs, dirfd, name, buf, sizeof(buf), &layer);
	if (n < 0)
		return -ENODATA;
	return origin_stat(fs, layer, buf, n, st);
}

/*
 * Return the inode number recorded in the origin file handle of an
 * upper entry, so that st_ino stays what it was before copy-up. Without
 * a handle that names a layer, return the fallback.
 */
ino_t ovl_origin_ino(struct ovl_fs *fs, int dirfd, const char *name,
		     ino_t fallback)
{
	uint8_t buf[256];
	int n, layer;

	n = origin_read(fs, dirfd, name, buf, sizeof(buf), &layer);
	if (n < 0)
		return fallback;
	return origin_handle_ino(fs, layer, buf, n, fallback);
}

/*
 * Return the st_ino of the upper non-directory st at dirfd/name. Without
 * the index, overlayfs shows the origin's only where the origin has one
 * link, because names of a lower hard link may have been copied up to
 * different files. An upper written with the index and then mounted
 * without it has such names.
 */
ino_t ovl_upper_file_ino(struct ovl_fs *fs, int dirfd, const char *name,
			 const struct stat *st)
{
	uint8_t buf[256];
	struct stat origin;
	int n, layer;

	if (fs->index_fd >= 0 || st->st_nlink == 1)
		return ovl_origin_ino(fs, dirfd, name, st->st_ino);
	n = origin_read(fs, dirfd, name, buf, sizeof(buf), &layer);
	if (n < 0 || origin_stat(fs, layer, buf, n, &origin) ||
	    origin.st_nlink != 1)
		return st->st_ino;
	return origin_handle_ino(fs, layer, buf, n, st->st_ino);
}

static void lookup_init(struct ovl_lookup *res)
{
	memset(res, 0, sizeof(*res));
	res->layer = -1;
	res->lower = -1;
	res->lower_last = -1;
	res->data_layer = -1;
}

/*
 * A relative redirect found in layer renames the entry. Where the entry
 * was found by name below its parent, the layers below search the new
 * name there too. Where it was found at an absolute path, as overlayfs
 * does, they search that path with its last component renamed.
 */
static int add_relative(struct ovl_fs *fs, struct ovl_node *parent, int layer,
			const char *value, const char *name,
			struct ovl_lookup *res)
{
	const struct ovl_redirect *r = ovl_redirect_at(res->chain, layer);
	char path[OVL_PATH_MAX];
	const char *slash;
	size_t len, vlen;

	if (r && !r->relative) {
		slash = strrchr(r->path, '/');
		len = slash ? (size_t)(slash + 1 - r->path) : 0;
		vlen = strlen(value);
		if (len + vlen >= sizeof(path))
			return -ENAMETOOLONG;
		memcpy(path, r->path, len);
		memcpy(path + len, value, vlen + 1);
		return ovl_redirect_add(&res->chain, layer + 1, path, false);
	}
	if (ovl_redirect_add(&res->chain, layer + 1, value, true))
		return -ENOMEM;
	if (layer != 0 || !fs->upper)
		return 0;
	/* An upper directory's redirect, resolved in the top lower layer. */
	if (ovl_node_lower_path(fs, parent, fs->first_lower, res->redirect,
				sizeof(res->redirect)))
		goto too_long;
	len = strlen(res->redirect);
	if (len + !!len + strlen(value) + 1 > sizeof(res->redirect))
		goto too_long;
	if (len)
		res->redirect[len++] = '/';
	strcpy(res->redirect + len, value);
	return 0;
too_long:
	res->redirect[0] = '\0';
	log_warn_rl("redirect of directory %s is too long", name);
	return 0;
}

/*
 * overlay.redirect on a moved directory found in layer: an absolute path
 * from the layer roots, or a new name in the parent's directory. It
 * applies to the layers below layer, so it joins res->chain from there.
 * The redirect of an upper directory is also stored resolved, as the
 * path in the top lower layer, in res->redirect.
 */
static int read_redirect(struct ovl_fs *fs, struct ovl_node *parent, int layer,
			 int dirfd, const char *name, struct ovl_lookup *res)
{
	char value[OVL_PATH_MAX];
	bool absolute;
	int n;

	if (layer + 1 >= fs->nlayers)
		return 0;
	n = ovl_redirect_read(fs, dirfd, name, value, sizeof(value));
	if (n < 0)
		return 0;
	if (n == 0)
		value[0] = '\0'; /* invalid, as overlayfs has it */
	absolute = value[0] == '/';
	/*
	 * As overlayfs: a redirect that may not be followed is an error,
	 * except an absolute one from a metacopy file into data-only
	 * layers, which those layers exist for.
	 */
	if (fs->config.redirect == OVL_REDIRECT_NOFOLLOW &&
	    !(res->metacopy && absolute && fs->first_data < fs->nlayers)) {
		log_warn_rl(
		    "not following the redirect of %s: redirect_dir=nofollow",
		    name);
		return -EPERM;
	}
	/* As overlayfs, fail the lookup. */
	if (!ovl_redirect_valid(value)) {
		log_warn_rl("invalid redirect '%s' on %s", value, name);
		return -EINVAL;
	}
	if (!absolute)
		return add_relative(fs, parent, layer, value, name, res);
	if (ovl_redirect_add(&res->chain, layer + 1, value + 1, false))
		return -ENOMEM;
	if (layer == 0 && fs->upper)
		strcpy(res->redirect, value + 1);
	return 0;
}

/*
 * A regular file with overlay.metacopy contains only metadata. Its data
 * is in a lower layer, at the same path or at the path its redirect
 * names. Returns 1 to search the layers below for the data, else 0 or a
 * negative errno.
 */
static int lookup_metacopy(struct ovl_fs *fs, struct ovl_node *parent,
			   int layer, int dirfd, const char *name,
			   const struct stat *st, struct ovl_lookup *res)
{
	int err = ovl_metacopy_check(fs, dirfd, name, st);

	if (err <= 0)
		return err;
	res->metacopy = true;
	err = read_redirect(fs, parent, layer, dirfd, name, res);
	return err ? err : 1;
}

/*
 * Search below a metacopy file. A further metacopy file passes the
 * search on, and the first plain regular file contains the data.
 */
static int lookup_data(struct ovl_fs *fs, struct ovl_node *parent, int layer,
		       int dirfd, const char *name, const struct stat *st,
		       struct ovl_lookup *res)
{
	int more;

	if (!S_ISREG(st->st_mode)) {
		log_warn_rl(
		    "a metacopy file's data, %s in %s, is not a regular file",
		    name, fs->layers[layer].path);
		return -EIO;
	}
	if (res->lower < 0)
		res->lower = layer;
	more = lookup_metacopy(fs, parent, layer, dirfd, name, st, res);
	if (more == 0)
		res->data_layer = layer;
	return more;
}

/* Look in the upper layer. Returns 1 if lower layers must be searched. */
static int lookup_upper(struct ovl_fs *fs, struct ovl_node *parent,
			const char *name, struct ovl_lookup *res)
{
	struct stat st;
	int dirfd, err, more = 1;
	bool owned;

	/*
	 * A directory with no upper copy has no upper entries. One that a
	 * copy-up is creating gets none before it is done and marked.
	 */
	if (!ovl_node_has(parent, OVL_N_UPPER))
		return 1;
	dirfd = ovl_node_dir_fd(fs, parent, 0, &owned);
	if (dirfd < 0)
		return dirfd == -ENOENT ? 1 : dirfd;
	err = ovl_do_fstatat(dirfd, name, &st);
	if (err) {
		if (owned)
			close(dirfd);
		return err == -ENOENT ? 1 : err;
	}
	if (ovl_upper_is_whiteout(fs, dirfd, name, &st)) {
		res->upper_whiteout = true;
		more = 0;
	} else {
		res->upper = true;
		res->layer = 0;
		res->st = st;
		if (S_ISDIR(st.st_mode)) {
			res->opaque = ovl_check_opaque(fs, dirfd, name);
			more = !res->opaque;
			if (more)
				err = read_redirect(fs, parent, 0, dirfd, name,
						    res);
			if (err)
				more = err;
		} else {
			res->st.st_ino =
			    ovl_upper_file_ino(fs, dirfd, name, &st);
			more = lookup_metacopy(fs, parent, 0, dirfd, name, &st,
					       res);
		}
	}
	if (owned)
		close(dirfd);
	return more;
}

/* A whiteout in a lower layer: a 0/0 device, or an xattr whiteout. */
static bool lower_is_whiteout(struct ovl_fs *fs, int dirfd, const char *name,
			      const struct stat *st, bool bare)
{
	if (ovl_is_whiteout(st))
		return true;
	if (bare || !S_ISREG(st->st_mode) || st->st_size != 0)
		return false;
	/* Only a directory marked opaque="x" may hold xattr whiteouts. */
	return ovl_check_xwhiteout_dir(fs, dirfd, ".") &&
	       ovl_check_xwhiteout(fs, dirfd, name, st);
}

/*
 * Merge one lower layer's entry into res. Returns 1 to go on to the
 * next layer, 0 to stop. An entry known to have no xattrs at all (bare)
 * is no metacopy file, no xattr whiteout, and no opaque or redirected
 * directory, so its overlay xattrs are not read.
 */
static int lookup_lower_one(struct ovl_fs *fs, struct ovl_node *parent,
			    int layer, int dirfd, const char *name,
			    const struct stat *st, struct ovl_lookup *res)
{
	bool found = res->upper || res->lower >= 0;
	bool bare = ovl_noxattr_known(fs, layer, st) ||
		    (!ovl_is_whiteout(st) &&
		     ovl_noxattr_learn(fs, layer, dirfd, name, st));
	int err;

	if (lower_is_whiteout(fs, dirfd, name, st, bare))
		return 0;
	if (res->metacopy)
		return lookup_data(fs, parent, layer, dirfd, name, st, res);
	if (found && !S_ISDIR(st->st_mode))
		return 0; /* a non-directory ends a merged directory */
	if (res->lower < 0) {
		res->lower = layer;
		if (!res->upper) {
			res->st = *st;
			res->layer = layer;
			res->noxattr = bare;
		}
		/* A merged directory keeps its lower st_ino. */
		res->st.st_ino = ovl_xino(fs, layer, st->st_ino);
	}
	res->lower_last = layer;
	if (bare)
		return S_ISDIR(st->st_mode);
	if (!S_ISDIR(st->st_mode))
		return lookup_metacopy(fs, parent, layer, dirfd, name, st, res);
	if (ovl_check_opaque(fs, dirfd, name))
		return 0;
	err = read_redirect(fs, parent, layer, dirfd, name, res);
	return err ? err : 1;
}

/*
 * Open the directory that contains the name being looked up in layer,
 * and point *base at its name there. That is below the parent under its
 * own name, or at the path named by a redirect met higher up.
 */
static int open_lower_at(struct ovl_fs *fs, struct ovl_node *parent,
			 const char *name, struct ovl_lookup *res, int layer,
			 const char **base, bool *owned)
{
	const struct ovl_redirect *r = ovl_redirect_at(res->chain, layer);

	if (!r || r->relative) {
		*base = r ? r->path : name;
		return ovl_node_dir_fd(fs, parent, layer, owned);
	}
	*owned = true;
	return ovl_redirect_walk(fs, res, layer, r->path, base);
}

/* The last layer an absolute redirect may lead into; data-only layers
 * count only for file data. */
static int redirect_last(struct ovl_fs *fs, const struct ovl_lookup *res)
{
	return res->metacopy ? fs->nlayers - 1 : fs->first_data - 1;
}

/*
 * Search the lower layers from the top. The parent's lower range bounds
 * the search, unless an absolute redirect sends it to paths that any
 * lower layer may hold.
 */
static int lookup_lowers(struct ovl_fs *fs, struct ovl_node *parent,
			 const char *name, struct ovl_lookup *res)
{
	const struct ovl_redirect *r;
	const char *base;
	int i, last, dirfd, err, more = 1;
	struct stat st;
	bool owned;

	i = parent->lower;
	last = parent->lower_last;
	r = ovl_redirect_at(res->chain, fs->first_lower);
	if (r && !r->relative) {
		i = fs->first_lower;
		last = redirect_last(fs, res);
	}
	for (; more > 0 && i >= 0 && i <= last; i++) {
		dirfd = open_lower_at(fs, parent, name, res, i, &base, &owned);
		if ((dirfd == -ENOENT || dirfd == -ENOTDIR) && res->stop_below)
			break;
		if (dirfd == -ENOENT || dirfd == -ENOTDIR)
			continue;
		if (dirfd < 0)
			return dirfd;
		err = ovl_do_fstatat(dirfd, base, &st);
		if (err == 0)
			more = lookup_lower_one(fs, parent, i, dirfd, base, &st,
						res);
		if (owned)
			close(dirfd);
		if (err && err != -ENOENT)
			return err;
		if (more < 0)
			return more;
		/* An opaque directory on an absolute path ends the search. */
		if (res->stop_below)
			more = 0;
		/* A redirect met here may lead below the parent's layers. */
		r = ovl_redirect_at(res->chain, i + 1);
		if (r && !r->relative && redirect_last(fs, res) > last)
			last = redirect_last(fs, res);
	}
	return 0;
}

static bool absolute_redirect(struct ovl_fs *fs, const struct ovl_lookup *res)
{
	const struct ovl_redirect *r =
	    ovl_redirect_at(res->chain, fs->first_lower);

	return r && !r->relative;
}

/* Look up name below parent in every layer; -ENOENT if it is not there. */
int ovl_lookup_name(struct ovl_fs *fs, struct ovl_node *parent,
		    const char *name, struct ovl_lookup *res)
{
	int more = 1, err;

	lookup_init(res);
	if (strlen(name) > 255)
		return -ENAMETOOLONG;
	if (ovl_node_has(parent, OVL_N_UPPER)) {
		more = lookup_upper(fs, parent, name, res);
		if (more < 0) {
			ovl_lookup_release(res);
			return more;
		}
		/* An opaque parent hides the lowers, except from an
		 * absolute redirect, which starts at their roots. */
		if (ovl_node_has(parent, OVL_N_OPAQUE) && more > 0 &&
		    !absolute_redirect(fs, res))
			more = 0;
	}
	if (more) {
		err = lookup_lowers(fs, parent, name, res);
		if (err) {
			ovl_lookup_release(res);
			return err;
		}
	}
	if (!res->upper && res->lower < 0) {
		ovl_lookup_release(res);
		return -ENOENT;
	}
	if (res->metacopy && res->data_layer < 0) {
		log_warn_rl("no data found for metacopy file %s", name);
		ovl_lookup_release(res);
		return -EIO;
	}
	return 0;
}

void ovl_lookup_release(struct ovl_lookup *res)
{
	ovl_redirect_free(res->chain);
	res->chain = NULL;
}

/* 1 if a lower layer shows an entry at name below parent, else 0. */
int ovl_lower_positive(struct ovl_fs *fs, struct ovl_node *parent,
		       const char *name)
{
	struct ovl_lookup res;
	int err;

	if (ovl_node_has(parent, OVL_N_OPAQUE) || parent->lower < 0)
		return 0;
	lookup_init(&res);
	err = lookup_lowers(fs, parent, name, &res);
	ovl_lookup_release(&res);
	if (err)
		return err;
	return res.lower >= 0;
}

/* Fill node from res; the node takes over res->chain. */
void ovl_node_fill(struct ovl_node *node, struct ovl_lookup *res)
{
	unsigned int flags = 0;

	node->type = res->st.st_mode & S_IFMT;
	node->ino = res->st.st_ino;
	node->lower = res->lower;
	node->lower_last = res->lower_last;
	node->data_layer = res->metacopy ? res->data_layer : -1;
	if (res->lower >= 0) {
		node->redirect = res->chain;
		res->chain = NULL;
	}
	ovl_lookup_release(res);
	if (res->upper)
		flags |= OVL_N_UPPER;
	else if (ovl_is_hard_link(&res->st))
		flags |= OVL_N_LINKED;
	if (!res->upper && res->noxattr && !res->metacopy)
		flags |= OVL_N_NOXATTR;
	else
		atomic_fetch_and(&node->flags, ~(unsigned int)OVL_N_NOXATTR);
	if (res->opaque)
		flags |= OVL_N_OPAQUE;
	atomic_fetch_or(&node->flags, flags);
}

/*
 * Make the real file's attributes those of the merged entry: the st_ino
 * kept across copy-up, and for a merged directory a link count of 1, as
 * overlayfs reports, since its subdirectories are spread over layers.
 */
void ovl_node_fix_stat(const struct ovl_node *node, struct stat *st)
{
	bool upper = ovl_node_has(node, OVL_N_UPPER);

	st->st_ino = node->ino;
	if (S_ISDIR(st->st_mode) && node->lower >= 0 &&
	    (upper || node->lower_last > node->lower))
		st->st_nlink = 1;
}

/* Attributes of a node's real file, with the st_ino users see. */
/* Stat a directory through its kept descriptor in layer, if it has one. */
static bool dir_stat(struct ovl_fs *fs, struct ovl_node *node, int layer,
		     struct stat *st)
{
	bool owned;
	int fd, err;

	if (ovl_node_has(node, OVL_N_DELETED) ||
	    !ovl_dirfd_get(fs, node, layer, &fd, &owned) || fd < 0)
		return false;
	err = fstat(fd, st);
	if (owned)
		close(fd);
	if (err < 0 || !S_ISDIR(st->st_mode))
		return false;
	ovl_node_fix_stat(node, st);
	return true;
}

/* Stat the node's real file by its path, with the index's link count. */
static int stat_by_path(struct ovl_fs *fs, struct ovl_node *node,
			struct stat *st)
{
	struct ovl_path path;
	int err;

	err = ovl_node_open_parent(fs, node, ovl_node_real_layer(node), &path);
	if (err)
		return err;
	err = ovl_do_fstatat(path.dirfd, path.name, st);
	if (!err && ovl_node_real_layer(node) == 0)
		ovl_index_fix_nlink(fs, &path, st,
				    !ovl_node_has(node, OVL_N_UPPER));
	ovl_path_close(&path);
	return err;
}

int ovl_node_stat(struct ovl_fs *fs, struct ovl_node *node, struct stat *st)
{
	unsigned int seen;
	int err, tries = 0;
	bool settled;

	if (node->anon_meta_fd >= 0) {
		if (fstat(node->anon_meta_fd, st) < 0)
			return -errno;
		ovl_index_fix_nlink_fd(fs, node->anon_meta_fd, false, st);
		ovl_node_fix_stat(node, st);
		ovl_metacopy_fix_blocks(fs, node, st);
		return 0;
	}
	if (node->anon_fd >= 0) {
		if (fstat(node->anon_fd, st) < 0)
			return -errno;
		ovl_index_fix_nlink_fd(fs, node->anon_fd, node->anon_lower, st);
		ovl_node_fix_stat(node, st);
		return 0;
	}
	/* A directory's own kept descriptor, as after lookups below it. */
	if (node->type == S_IFDIR &&
	    dir_stat(fs, node, ovl_node_real_layer(node), st))
		return 0;
	ovl_index_refresh(fs, node);
	do {
		settled = ovl_moves_settle(fs, &seen);
		err = stat_by_path(fs, node, st);
	} while (ovl_moves_read_again(fs, settled, seen, &tries));
	if (err)
		return err;
	/*
	 * A rename that has moved the real file but not the node yet shows
	 * another entry at the node's path, maybe the whiteout it left. The
	 * kernel takes a changed file type for a broken inode (EIO), so the
	 * node reports that its name is gone instead.
	 */
	if ((st->st_mode & S_IFMT) != node->type)
		return -ENOENT;
	ovl_node_fix_stat(node, st);
	ovl_metacopy_fix_blocks(fs, node, st);
	return 0;
}

/*
 * Look up name below parent and return its node with one more kernel
 * lookup reference, and its attributes.
 */
int ovl_lookup_node(struct ovl_fs *fs, struct ovl_node *parent,
		    const char *name, struct ovl_node **out, struct stat *st)
{
	struct ovl_lookup res;
	struct ovl_node *node;
	int err;

	node = ovl_node_find(fs, parent, name);
	if (node) {
		err = ovl_node_stat(fs, node, st);
		if (!err) {
			*out = node;
			return 0;
		}
		/* The layers changed under the mount: look again. */
		if (err == -ENOENT)
			ovl_node_unhash(fs, node);
		ovl_node_forget(fs, node, 1);
		if (err != -ENOENT)
			return err;
	}
	err = ovl_lookup_name(fs, parent, name, &res);
	if (err)
		return err;
	node = ovl_node_new(fs, parent, name);
	if (!node) {
		ovl_lookup_release(&res);
		return -ENOMEM;
	}
	ovl_node_fill(node, &res);
	*out = ovl_node_insert(fs, node);
	if (*out == node)
		ovl_prefetch_dir(fs, node);
	/* A hard link under index=on may be in the index already. */
	if (ovl_index_wanted(fs, &res.st)) {
		err = ovl_node_stat(fs, *out, st);
		if (err)
			ovl_node_forget(fs, *out, 1);
		return err;
	}
	*st = res.st;
	ovl_node_fix_stat(*out, st);
	ovl_metacopy_fix_blocks(fs, *out, st);
	return 0;
}

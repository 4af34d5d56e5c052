// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * index=on: hard links of a lower file stay one file across copy-up, in
 * overlayfs's format. As in overlayfs, this holds for every non-directory,
 * not only for regular files. The first name to be copied up is copied
 * into workdir/index, under the hex of the lower file's handle, and linked
 * from there into the upper layer. Every later name is linked to that
 * same index entry. Until then a lower name whose index entry exists
 * reads and stats the index entry, so all names see one file.
 *
 * overlay.nlink on the index entry ("U+N") keeps the link count users
 * see: the upper inode's own count plus N, since the index entry and the
 * names not yet linked up are counted differently on disk.
 */
#include "ovl.h"
#include "../common/caps.h"
#include "../common/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define INDEX_NAME_MAX (2 * OVL_FH_MAX + 1)

static void hex_encode(const uint8_t *in, int len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	int i;

	for (i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

/* The index name of dirfd/name in a lower layer, or -EOPNOTSUPP. */
static int index_name(struct ovl_fs *fs, int dirfd, const char *name, char *out)
{
	uint8_t fb[OVL_FH_MAX];
	int len = ovl_encode_fh(fs, dirfd, name, fb, false);

	if (!len)
		return -EOPNOTSUPP;
	hex_encode(fb, len, out);
	return 0;
}

/*
 * Compare an xattr with the handle it must hold; set it when missing and
 * set is true.
 */
static int verify_fh(struct ovl_fs *fs, int dirfd, const char *name,
		     const char *suffix, const uint8_t *fb, int len, bool set)
{
	uint8_t cur[OVL_FH_MAX];
	char attr[64];
	int n;

	ovl_xattr_name(fs, attr, sizeof(attr), suffix);
	n = ovl_do_getxattr(dirfd, name, attr, cur, sizeof(cur));
	if (n == -ENODATA && (fs->check_only || !set))
		return 0;
	if (n == -ENODATA)
		return ovl_do_setxattr(dirfd, name, attr, fb, len, 0);
	if (n < 0)
		return n;
	return n == len && !memcmp(cur, fb, len) ? 0 : -ESTALE;
}

static int check_handles(struct ovl_fs *fs, struct ovl_error *e)
{
	uint8_t lower[OVL_FH_MAX], upper[OVL_FH_MAX];
	const char *ldir = fs->layers[fs->first_lower].path;
	int llen, ulen, err;

	llen = ovl_encode_fh(fs, fs->layers[fs->first_lower].fd, ".", lower,
			     false);
	ulen = ovl_encode_fh(fs, fs->upper->fd, ".", upper, true);
	if (!llen || !ulen) {
		ovl_error_set(
		    e,
		    "index=on: %s cannot give file handles with a filesystem UUID; use index=off",
		    llen ? fs->upper->path : ldir);
		return -EOPNOTSUPP;
	}
	/*
	 * The upper root records its lowers once the index contains a file,
	 * because fuse-overlayfs misreads an upper root with an origin. The
	 * index records its upper.
	 */
	err = verify_fh(fs, fs->upper->fd, ".", "origin", lower, llen, false);
	if (err == -ESTALE)
		ovl_error_set(
		    e,
		    "index=on: upperdir %s was used with other lower layers than %s; mount it with its own lowerdir, or use index=off",
		    fs->upper->path, ldir);
	if (!err && fs->index_fd >= 0) {
		err = verify_fh(fs, fs->index_fd, ".", "upper", upper, ulen,
				true);
		if (err == -ESTALE)
			ovl_error_set(
			    e,
			    "index=on: the index in workdir %s belongs to another upperdir; use an empty workdir",
			    fs->config.workdir);
	}
	if (err && !e->msg[0])
		ovl_error_set(e, "index=on: checking the layers failed: %s",
			      strerror(-err));
	return err;
}

static void index_cleanup(struct ovl_fs *fs);

/*
 * Without index= the index is on where it can be: an upper with
 * trusted xattrs over lowers that give file handles. An upper that was
 * indexed over other lowers then mounts without it, with a warning.
 */
static int index_auto(struct ovl_fs *fs, struct ovl_error *e)
{
	int err;

	if (!have_capability(CAP_DAC_READ_SEARCH))
		return 0;
	fs->config.index = true;
	err = ovl_index_setup(fs, e);
	if (!err)
		return 0;
	if (fs->index_fd >= 0)
		close(fs->index_fd);
	fs->index_fd = -1;
	fs->config.index = false;
	if (err == -ESTALE)
		log_warn("%s; hard links are not kept together on this mount",
			 e->msg);
	e->msg[0] = '\0';
	return 0;
}

int ovl_index_setup(struct ovl_fs *fs, struct ovl_error *e)
{
	char advice[512];
	int err;

	fs->index_fd = -1;
	if (!fs->config.index_set && !fs->config.userxattr) {
		fs->config.index_set = true;
		return index_auto(fs, e);
	}
	if (!fs->config.index)
		return 0;
	/* The index finds lower files by handle, as overlayfs does, which
	 * needs the capability; overlayfs then goes without the index. */
	if (!have_capability(CAP_DAC_READ_SEARCH)) {
		log_warn(
		    "index=on needs CAP_DAC_READ_SEARCH to open lower files by their handles, which this mount does not have; hard links are not kept together on this mount (index=off), as in overlayfs");
		fs->config.index = false;
		return 0;
	}
	/* lamina check creates nothing: it checks an index already there. */
	if (fs->check_only) {
		fs->index_fd =
		    openat(fs->workdir_fd, "index",
			   O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		return check_handles(fs, e);
	}
	if (mkdirat(fs->workdir_fd, "index", 0700) < 0 && errno != EEXIST) {
		err = -errno;
		ovl_space_advice(fs, err, advice, sizeof(advice));
		ovl_error_set(e, "index=on: cannot create %s/index: %s%s",
			      fs->config.workdir, strerror(-err), advice);
		return err;
	}
	fs->index_fd = openat(fs->workdir_fd, "index",
			      O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fs->index_fd < 0 && errno == ENOTDIR) {
		/* O_NOFOLLOW: a symbolic link there fails as ENOTDIR too. */
		ovl_error_set(
		    e,
		    "index=on: %s/index is not a directory (a symbolic link or a file); put the index directory itself there",
		    fs->config.workdir);
		return -ENOTDIR;
	}
	if (fs->index_fd < 0) {
		err = -errno;
		ovl_error_set(e, "index=on: cannot open %s/index: %s",
			      fs->config.workdir, strerror(-err));
		return err;
	}
	err = check_handles(fs, e);
	if (!err)
		index_cleanup(fs);
	return err;
}

/*
 * Before the first file goes into the index: tie the upper to its top
 * lower layer, as overlayfs does at mount time.
 */
int ovl_index_claim_upper(struct ovl_fs *fs)
{
	uint8_t lower[OVL_FH_MAX];
	int len, err;

	if (atomic_load(&fs->index_claimed))
		return 0;
	len = ovl_encode_fh(fs, fs->layers[fs->first_lower].fd, ".", lower,
			    false);
	if (!len)
		return -EOPNOTSUPP;
	err = verify_fh(fs, fs->upper->fd, ".", "origin", lower, len, true);
	if (!err)
		atomic_store(&fs->index_claimed, true);
	return err;
}

/*
 * Whether st is a hard link that index=on keeps together. As
 * ovl_need_index() in the kernel's fs/overlayfs/util.c decides, that is
 * any non-directory with more than one name, a symlink or device node too.
 */
bool ovl_is_hard_link(const struct stat *st)
{
	return !S_ISDIR(st->st_mode) && st->st_nlink > 1;
}

/* Whether a copy-up of the lower file st goes through the index. */
bool ovl_index_wanted(struct ovl_fs *fs, const struct stat *st)
{
	return fs->index_fd >= 0 && ovl_is_hard_link(st);
}

/*
 * The index entry of a lower file into path, with its attributes in st.
 * Without one, -ENOENT, and path->name is still set to the name it
 * would have (path->dirfd is then -1).
 */
int ovl_index_find(struct ovl_fs *fs, const struct ovl_path *lower,
		   struct ovl_path *path, struct stat *st)
{
	char name[INDEX_NAME_MAX];
	int err = index_name(fs, lower->dirfd, lower->name, name);

	path->dirfd = -1;
	path->pin = NULL;
	if (err)
		return err;
	if (strlen(name) >= sizeof(path->name))
		return -ENAMETOOLONG;
	strcpy(path->name, name);
	err = ovl_do_fstatat(fs->index_fd, name, st);
	if (err)
		return err;
	path->dirfd = dup(fs->index_fd);
	return path->dirfd < 0 ? -errno : 0;
}

/*
 * A lower name whose file was copied up through another name: from now
 * on the node stats the index entry. It reads the entry too, unless the
 * entry is a metacopy file, as overlayfs with metacopy=on leaves for a
 * change of metadata. Its data then stays in the lower file.
 */
void ovl_index_refresh(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_path lower, index;
	struct stat st;

	if (fs->index_fd < 0 || !ovl_node_has(node, OVL_N_LINKED) ||
	    ovl_node_has(node, OVL_N_UPPER | OVL_N_INDEX))
		return;
	if (ovl_node_open_parent(fs, node, node->lower, &lower))
		return;
	if (!ovl_do_fstatat(lower.dirfd, lower.name, &st) &&
	    ovl_index_wanted(fs, &st) &&
	    !ovl_index_find(fs, &lower, &index, &st)) {
		/* A lower metacopy file keeps the data layer it found. */
		if (!ovl_has_metacopy(fs, fs->index_fd, index.name))
			node->data_layer = -1;
		else if (node->data_layer < 0)
			node->data_layer = node->lower;
		atomic_fetch_or(&node->flags, OVL_N_INDEX);
		ovl_path_close(&index);
	}
	ovl_path_close(&lower);
}

/* For a node flagged OVL_N_INDEX: its index entry. */
int ovl_index_open(struct ovl_fs *fs, struct ovl_node *node,
		   struct ovl_path *path)
{
	struct ovl_path lower;
	struct stat st;
	int err = ovl_node_open_parent(fs, node, node->lower, &lower);

	if (err)
		return err;
	err = ovl_index_find(fs, &lower, path, &st);
	ovl_path_close(&lower);
	return err;
}

/*
 * Whether the index entry at dirfd/name has no name left that users see.
 * As ovl_verify_index() in the kernel's fs/overlayfs/namei.c decides, that
 * is an entry with no upper link whose overlay.nlink counts no name or is
 * missing. A copy-up that died before it set overlay.nlink leaves such one.
 */
static bool index_orphan(struct ovl_fs *fs, int dirfd, const char *name)
{
	struct stat st;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
	    S_ISDIR(st.st_mode) || st.st_nlink != 1)
		return false;
	return ovl_index_count(fs, dirfd, name, st.st_nlink, 0, 0) <= 0;
}

/*
 * After a name of an indexed file went away: once users see no name of
 * it any more, its index entry goes too, as overlayfs removes it.
 */
void ovl_index_drop_orphan(struct ovl_fs *fs, const struct ovl_path *lower)
{
	struct ovl_path index;
	struct stat st;

	if (ovl_index_find(fs, lower, &index, &st))
		return;
	if (index_orphan(fs, index.dirfd, index.name) &&
	    unlinkat(index.dirfd, index.name, 0) < 0)
		log_warn_rl("removing index entry %s failed: %s", index.name,
			    strerror(errno));
	ovl_path_close(&index);
}

/*
 * Remove what earlier mounts left in the index with no name to show. An
 * entry whose overlay.nlink still counts from the lower file, as a crash
 * in the middle of a copy-up or a removal leaves it, counts from the
 * upper links again, which later removals of upper names lower.
 */
static void index_cleanup(struct ovl_fs *fs)
{
	DIR *dir = ovl_opendir_at(fs->index_fd);
	struct dirent *d;
	int fd, err;

	if (!dir)
		return;
	fd = dirfd(dir);
	while ((d = readdir(dir))) {
		if (d->d_name[0] == '.')
			continue;
		if (!index_orphan(fs, fd, d->d_name)) {
			err = ovl_index_nlink_upper(fs, fd, d->d_name);
			if (err)
				log_warn_rl(
				    "fixing the link count of index entry %s failed: %s",
				    d->d_name, strerror(-err));
			continue;
		}
		if (unlinkat(fd, d->d_name, 0) < 0)
			log_warn_rl("removing index entry %s failed: %s",
				    d->d_name, strerror(errno));
	}
	closedir(dir);
}

/*
 * Store overlay.nlink as overlayfs writes it: the count users see is the
 * upper inode's links plus delta (base 'U'), or the lower file's links
 * plus delta (base 'L').
 */
int ovl_index_set_nlink(struct ovl_fs *fs, int dirfd, const char *name,
			char base, long delta)
{
	char attr[64], value[32];

	ovl_xattr_name(fs, attr, sizeof(attr), "nlink");
	snprintf(value, sizeof(value), "%c%+ld", base, delta);
	return ovl_do_setxattr(dirfd, name, attr, value, strlen(value), 0);
}

/* Parse overlay.nlink into its base and delta: 0, -ENODATA or -EINVAL. */
static int nlink_read(struct ovl_fs *fs, int dirfd, const char *name,
		      char *base, long *delta)
{
	char attr[64], value[32], *end;
	int n;

	ovl_xattr_name(fs, attr, sizeof(attr), "nlink");
	n = ovl_do_getxattr(dirfd, name, attr, value, sizeof(value) - 1);
	if (n < 0)
		return n;
	value[n] = '\0';
	if (n < 3 || (value[0] != 'U' && value[0] != 'L') ||
	    (value[1] != '+' && value[1] != '-'))
		return -EINVAL;
	errno = 0;
	*delta = strtol(value + 1, &end, 10);
	if (*end || errno)
		return -EINVAL;
	*base = value[0];
	return 0;
}

/*
 * The link count users see for the indexed file dirfd/name, whose inode
 * has links links, as ovl_get_nlink() in the kernel's fs/overlayfs/inode.c
 * computes it. "U+N" counts from those links. "L+N" counts from the lower
 * file's links, which a crash cannot change, so it is written before a
 * step that adds or removes an upper link. lower_links is the lower
 * file's count, or 0 to stat the file that overlay.origin names. Returns
 * fallback without a valid overlay.nlink; the count may be 0 or less.
 */
long ovl_index_count(struct ovl_fs *fs, int dirfd, const char *name,
		     nlink_t links, nlink_t lower_links, long fallback)
{
	struct stat lower;
	long delta;
	char base;
	int err;

	err = nlink_read(fs, dirfd, name, &base, &delta);
	if (err == -ENODATA)
		return fallback;
	if (!err && base == 'L' && !lower_links) {
		err = ovl_origin_stat(fs, dirfd, name, &lower);
		lower_links = lower.st_nlink;
	}
	if (err) {
		log_warn_rl(
		    "reading the link count of index entry %s failed: %s", name,
		    strerror(-err));
		return fallback;
	}
	return (long)(base == 'L' ? lower_links : links) + delta;
}

/*
 * Before a step that adds or removes an upper link of the indexed file
 * dirfd/name: make overlay.nlink count from the lower file, which has
 * lower_links links, so that a crash in that step keeps the count right.
 * overlayfs does the same in ovl_set_nlink_lower(). Call it with
 * index_nlink_lock held.
 */
int ovl_index_nlink_lower(struct ovl_fs *fs, int dirfd, const char *name,
			  nlink_t lower_links)
{
	struct stat st;
	long count;
	int err = ovl_do_fstatat(dirfd, name, &st);

	if (err)
		return err;
	count = ovl_index_count(fs, dirfd, name, st.st_nlink, lower_links,
				(long)st.st_nlink);
	return ovl_index_set_nlink(fs, dirfd, name, 'L',
				   count - (long)lower_links);
}

/*
 * After that step: make overlay.nlink count from the upper links again,
 * which later removals of upper names lower, as ovl_set_nlink_upper()
 * does. Leaves a "U" value as it is. Call it with index_nlink_lock held.
 */
int ovl_index_nlink_upper(struct ovl_fs *fs, int dirfd, const char *name)
{
	struct stat st;
	long delta, count;
	char base;
	int err = nlink_read(fs, dirfd, name, &base, &delta);

	if (err == -ENODATA || (!err && base == 'U'))
		return 0;
	if (!err)
		err = ovl_do_fstatat(dirfd, name, &st);
	if (err)
		return err;
	count = ovl_index_count(fs, dirfd, name, st.st_nlink, 0, -1);
	if (count < 0)
		return -EINVAL;
	return ovl_index_set_nlink(fs, dirfd, name, 'U',
				   count - (long)st.st_nlink);
}

/*
 * The link count users see for an upper file that may be indexed, or for
 * an index entry itself (entry), which is the only link of its file once
 * every upper name of it is gone. The count and the delta are read
 * together, since a copy-up that links a name changes both.
 */
void ovl_index_fix_nlink(struct ovl_fs *fs, const struct ovl_path *path,
			 struct stat *st, bool entry)
{
	struct stat now;
	long nlink;

	if (fs->index_fd < 0 || S_ISDIR(st->st_mode) ||
	    (st->st_nlink < 2 && !entry))
		return;
	pthread_mutex_lock(&fs->index_nlink_lock);
	if (ovl_do_fstatat(path->dirfd, path->name, &now) == 0 &&
	    now.st_ino == st->st_ino && now.st_dev == st->st_dev)
		st->st_nlink = now.st_nlink;
	nlink = ovl_index_count(fs, path->dirfd, path->name, st->st_nlink, 0,
				(long)st->st_nlink);
	pthread_mutex_unlock(&fs->index_nlink_lock);
	if (nlink >= 1)
		st->st_nlink = (nlink_t)nlink;
}

/* The link count users see for the lower file open as fd, read from its
 * index entry: 0 once the entry was removed with the last name, or -errno. */
static long index_nlink_of_lower(struct ovl_fs *fs, int fd, nlink_t lower_links)
{
	struct ovl_path lower = {.dirfd = fd}, index;
	struct stat st;
	long nlink;
	int err;

	err = ovl_index_find(fs, &lower, &index, &st);
	if (err)
		return err == -ENOENT ? 0 : err;
	pthread_mutex_lock(&fs->index_nlink_lock);
	if (ovl_do_fstatat(index.dirfd, index.name, &st) == 0)
		nlink =
		    ovl_index_count(fs, index.dirfd, index.name, st.st_nlink,
				    lower_links, (long)st.st_nlink);
	else
		nlink = 0;
	pthread_mutex_unlock(&fs->index_nlink_lock);
	ovl_path_close(&index);
	return nlink;
}

/*
 * Set st's link count for fd, a file open through a name that is gone, to
 * the number of names it has left, as overlayfs counts them. That is 0
 * after the last one, although the upper file may still have its index
 * entry and the lower file keeps all its links. fd is the lower file when
 * lower is true, else the upper or index file.
 */
void ovl_index_fix_nlink_fd(struct ovl_fs *fs, int fd, bool lower,
			    struct stat *st)
{
	char proc[32];
	struct stat now;
	long nlink;

	if (fs->index_fd < 0 || !S_ISREG(st->st_mode))
		return;
	if (lower) {
		/* A lower file with one name never goes into the index. */
		if (st->st_nlink < 2)
			return;
		nlink = index_nlink_of_lower(fs, fd, st->st_nlink);
		if (nlink < 0)
			return;
	} else {
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
		pthread_mutex_lock(&fs->index_nlink_lock);
		if (fstat(fd, &now) == 0)
			st->st_nlink = now.st_nlink;
		nlink = ovl_index_count(fs, AT_FDCWD, proc, st->st_nlink, 0,
					(long)st->st_nlink);
		pthread_mutex_unlock(&fs->index_nlink_lock);
	}
	st->st_nlink = nlink > 0 ? (nlink_t)nlink : 0;
}

// SPDX-License-Identifier: GPL-2.0-or-later
/* The operation table that the FUSE transport calls, and INIT. */
#include "ops.h"
#include "fuse/fuse_compat.h"
#include "../common/log.h"

#include <string.h>
#include <unistd.h>

/*
 * Features asked of the kernel. Layers are static while mounted, so the
 * kernel may cache entries, attributes, symlinks and listings; POSIX
 * ACLs are checked and cached by the kernel too. AUTO_INVAL_DATA drops
 * the pages that the kernel caches for a file whose mtime or size it
 * finds changed, as after writes through another name of a hard link
 * without passthrough. With HANDLE_KILLPRIV_V2
 * lamina clears set-ID bits itself, and the kernel stops asking for
 * security.capability before every write once a file is known to have
 * none.
 */
#define OVL_WANT_FLAGS                                                         \
	(FUSE_ASYNC_READ | FUSE_ATOMIC_O_TRUNC | FUSE_AUTO_INVAL_DATA |        \
	 FUSE_BIG_WRITES | FUSE_DONT_MASK | FUSE_MAX_PAGES |                   \
	 FUSE_PARALLEL_DIROPS | FUSE_DO_READDIRPLUS | FUSE_CACHE_SYMLINKS |    \
	 FUSE_POSIX_ACL | FUSE_SETXATTR_EXT | FUSE_DIRECT_IO_ALLOW_MMAP |      \
	 FUSE_NO_OPENDIR_SUPPORT | FUSE_HANDLE_KILLPRIV_V2)

void ovl_op_init(void *arg, struct fuse_conn *conn)
{
	struct ovl_fs *fs = arg;
	int err;

	conn->want_flags = OVL_WANT_FLAGS;
	if (fs->config.io_uring)
		conn->want_flags |= FUSE_OVER_IO_URING;
	if (atomic_load(&fs->passthrough_ok)) {
		if (conn->kernel_flags & FUSE_PASSTHROUGH) {
			conn->want_flags |= FUSE_PASSTHROUGH;
			/* Backing files may sit on a plain filesystem. */
			conn->max_stack_depth = 1;
		} else {
			atomic_store(&fs->passthrough_ok, false);
			log_info("the kernel offers no FUSE passthrough; reads and writes go through lamina");
		}
	}
	/*
	 * NOTE: no writeback cache without passthrough, although it gathers
	 * small writes (64 MiB in 4 KiB writes: 72 ms instead of 0.21 s).
	 * The kernel then takes no size or mtime of a regular file from
	 * lamina and writes back what it caches, which needs one kernel
	 * inode per file. lamina gives each name of a hard link its own, so
	 * a write through a name with a stale cache undid a write through
	 * another. O_TMPFILE files and uncached opens lost their mtime too.
	 * One inode for all names needs requests on it to reach the file
	 * without a name, since FUSE gives none: a trial that picked one of
	 * the names acted on names that were gone or named another file.
	 */
	fs->dont_mask = conn->kernel_flags & FUSE_DONT_MASK;
	fs->no_opendir = conn->kernel_flags & FUSE_NO_OPENDIR_SUPPORT;
	ovl_dirfd_init(fs);
	ovl_noxattr_probe(fs);
	if (ovl_noxattr_init(fs))
		log_warn(
		    "no memory for the table of files without xattrs; lookups read each file's overlay xattrs");
	ovl_readahead_start(fs);
	err = fs->config.prefetch ? ovl_prefetch_start(fs) : 0;
	if (err)
		log_warn("starting the directory prefetch thread failed: %s; lower directories are read only on request",
			 strerror(-err));
}

void ovl_op_destroy(void *arg)
{
	(void)arg;
}

const struct fuse_ops ovl_fuse_ops = {
    .init = ovl_op_init,
    .destroy = ovl_op_destroy,
    .lookup = ovl_op_lookup,
    .forget = ovl_op_forget,
    .getattr = ovl_op_getattr,
    .statx = ovl_op_statx,
    .setattr = ovl_op_setattr,
    .readlink = ovl_op_readlink,
    .symlink = ovl_op_symlink,
    .mknod = ovl_op_mknod,
    .mkdir = ovl_op_mkdir,
    .unlink = ovl_op_unlink,
    .rmdir = ovl_op_rmdir,
    .rename = ovl_op_rename,
    .link = ovl_op_link,
    .open = ovl_op_open,
    .create = ovl_op_create,
    .tmpfile = ovl_op_tmpfile,
    .read = ovl_op_read,
    .write = ovl_op_write,
    .flush = ovl_op_flush,
    .release = ovl_op_release,
    .fsync = ovl_op_fsync,
    .opendir = ovl_op_opendir,
    .readdir = ovl_op_readdir,
    .releasedir = ovl_op_releasedir,
    .fsyncdir = ovl_op_fsyncdir,
    .statfs = ovl_op_statfs,
    .setxattr = ovl_op_setxattr,
    .getxattr = ovl_op_getxattr,
    .listxattr = ovl_op_listxattr,
    .removexattr = ovl_op_removexattr,
    .access = ovl_op_access,
    .fallocate = ovl_op_fallocate,
    .lseek = ovl_op_lseek,
    .copy_file_range = ovl_op_copy_file_range,
};

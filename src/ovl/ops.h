/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The overlay engine's FUSE operations, one group per file: inode.c
 * (attributes), dir.c (names), rename.c, file.c, dirops.c, xattr.c.
 */
#ifndef LAMINA_OVL_OPS_H
#define LAMINA_OVL_OPS_H

#include "fuse/transport.h"
#include "ovl.h"

static inline struct ovl_fs *ovl_req_fs(struct fuse_req *req)
{
	return fuse_req_fs(req);
}

static inline struct ovl_node *ovl_req_node(struct fuse_req *req,
					    uint64_t nodeid)
{
	return ovl_node_from_id(ovl_req_fs(req), nodeid);
}

/* Reply with an entry for node, whose lookup count the caller raised. */
void ovl_reply_entry(struct fuse_req *req, struct ovl_node *node,
		     const struct stat *st);
void ovl_fill_entry(struct ovl_fs *fs, struct fuse_entry *e,
		    struct ovl_node *node, const struct stat *st);
/* Reply with -err, or with nothing to add when err is 0. */
void ovl_reply_status(struct fuse_req *req, int err);

/* A new object in a directory: dir.c */
struct ovl_create {
	mode_t mode; /* type and permission bits */
	dev_t rdev;
	const char *target;	  /* symlink target */
	struct ovl_path *link_src; /* hard link source in the upper layer */
	int open_flags;		  /* regular files: open(2) flags */
	ino_t ino;		  /* st_ino to show, 0 for the new inode's */
	bool lookup; /* build the node by a lookup: a link to a metacopy */
	int fd;			  /* out: the open file, or -1 */
};
int ovl_create_object(struct fuse_req *req, struct ovl_node *parent,
		      const char *name, struct ovl_create *c,
		      struct ovl_node **out, struct stat *st);
int ovl_set_umask(struct ovl_fs *fs, const struct fuse_ctx *ctx);
int ovl_set_owner(struct ovl_fs *fs, int dirfd, const char *name,
		  const struct fuse_ctx *ctx, int parent_fd, struct stat *out);

/* file.c */
int ovl_file_setup(struct fuse_req *req, struct ovl_node *node, int fd,
		   bool upper, struct fuse_file_info *fi);
struct ovl_file *ovl_node_open_file(struct ovl_node *node);
void ovl_file_put(struct ovl_fs *fs, struct ovl_file *file);
int ovl_file_read_fd(struct ovl_fs *fs, struct ovl_file *file);

void ovl_op_init(void *fs, struct fuse_conn *conn);
void ovl_op_destroy(void *fs);
void ovl_op_lookup(struct fuse_req *req, uint64_t parent, const char *name);
void ovl_op_forget(void *fs, uint64_t nodeid, uint64_t nlookup);
void ovl_op_getattr(struct fuse_req *req, uint64_t nodeid, uint64_t fh,
		    bool has_fh);
void ovl_op_statx(struct fuse_req *req, uint64_t nodeid, uint64_t fh,
		  bool has_fh);
void ovl_op_setattr(struct fuse_req *req, uint64_t nodeid,
		    const struct fuse_setattr *attr);
void ovl_op_readlink(struct fuse_req *req, uint64_t nodeid);
void ovl_op_access(struct fuse_req *req, uint64_t nodeid, int mask);
void ovl_op_statfs(struct fuse_req *req, uint64_t nodeid);
void ovl_op_symlink(struct fuse_req *req, uint64_t parent, const char *name,
		    const char *target);
void ovl_op_mknod(struct fuse_req *req, uint64_t parent, const char *name,
		  mode_t mode, dev_t rdev);
void ovl_op_mkdir(struct fuse_req *req, uint64_t parent, const char *name,
		  mode_t mode);
void ovl_op_unlink(struct fuse_req *req, uint64_t parent, const char *name);
void ovl_op_rmdir(struct fuse_req *req, uint64_t parent, const char *name);
void ovl_op_link(struct fuse_req *req, uint64_t nodeid, uint64_t newparent,
		 const char *newname);
void ovl_op_rename(struct fuse_req *req, uint64_t parent, const char *name,
		   uint64_t newparent, const char *newname,
		   unsigned int flags);
void ovl_op_open(struct fuse_req *req, uint64_t nodeid,
		 struct fuse_file_info *fi);
void ovl_op_create(struct fuse_req *req, uint64_t parent, const char *name,
		   mode_t mode, struct fuse_file_info *fi);
void ovl_op_tmpfile(struct fuse_req *req, uint64_t parent, mode_t mode,
		    struct fuse_file_info *fi);
void ovl_op_read(struct fuse_req *req, uint64_t nodeid, size_t size,
		 off_t off, struct fuse_file_info *fi);
void ovl_op_write(struct fuse_req *req, uint64_t nodeid, const void *buf,
		  size_t size, off_t off, struct fuse_file_info *fi);
void ovl_op_flush(struct fuse_req *req, uint64_t nodeid,
		  struct fuse_file_info *fi);
void ovl_op_release(struct fuse_req *req, uint64_t nodeid,
		    struct fuse_file_info *fi);
void ovl_op_fsync(struct fuse_req *req, uint64_t nodeid, bool datasync,
		  struct fuse_file_info *fi);
void ovl_op_fallocate(struct fuse_req *req, uint64_t nodeid, int mode,
		      off_t off, off_t len, struct fuse_file_info *fi);
void ovl_op_lseek(struct fuse_req *req, uint64_t nodeid, off_t off,
		  int whence, struct fuse_file_info *fi);
void ovl_op_copy_file_range(struct fuse_req *req, uint64_t nodein,
			    off_t offin, struct fuse_file_info *fiin,
			    uint64_t nodeout, off_t offout,
			    struct fuse_file_info *fiout, size_t len,
			    int flags);
void ovl_op_opendir(struct fuse_req *req, uint64_t nodeid,
		    struct fuse_file_info *fi);
void ovl_op_readdir(struct fuse_req *req, uint64_t nodeid, size_t size,
		    off_t off, bool plus, struct fuse_file_info *fi);
void ovl_op_releasedir(struct fuse_req *req, uint64_t nodeid,
		       struct fuse_file_info *fi);
void ovl_op_fsyncdir(struct fuse_req *req, uint64_t nodeid, bool datasync,
		     struct fuse_file_info *fi);
void ovl_op_setxattr(struct fuse_req *req, uint64_t nodeid, const char *name,
		     const void *value, size_t size, int flags);
void ovl_op_getxattr(struct fuse_req *req, uint64_t nodeid, const char *name,
		     size_t size);
void ovl_op_listxattr(struct fuse_req *req, uint64_t nodeid, size_t size);
void ovl_op_removexattr(struct fuse_req *req, uint64_t nodeid,
			const char *name);

#endif

/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * lamina's overlay engine: the core structures. Every function returns
 * 0 or a negative errno; messages are made by the callers at the edge.
 */
#ifndef LAMINA_OVL_H
#define LAMINA_OVL_H

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

struct fuse_ctx;
struct fuse_session;

/* redirect_dir=: whether directory renames write and read redirects. */
enum ovl_redirect_mode {
	OVL_REDIRECT_ON,     /* create and follow (lamina's default) */
	OVL_REDIRECT_FOLLOW, /* follow, but renames of lower dirs fail */
	OVL_REDIRECT_OFF,    /* as follow: overlayfs's redirect_always_follow */
	OVL_REDIRECT_NOFOLLOW, /* neither create nor follow */
};

/* Mount options after parsing; see params.c for the accepted names. */
struct ovl_config {
	char **lowerdirs; /* top first */
	int nlower;
	int ndata; /* the last ndata lowers are data-only (after "::") */
	char *upperdir;
	char *workdir;
	char *mountpoint;
	bool read_only;
	bool userxattr;
	bool volatile_mount;
	bool passthrough;
	bool io_uring; /* take requests through io_uring when offered */
	bool prefetch; /* read lower directories ahead: see prefetch.c */
	bool xino_off;
	bool allow_other;
	enum ovl_redirect_mode redirect;
	bool redirect_set; /* redirect_dir= was given */
	bool metacopy;	   /* copy up metadata alone where data may wait */
	bool index;	   /* keep hard links of lower files together */
	bool index_set;	   /* index= was given; else on where it can be */
	unsigned long mount_flags; /* MS_* from the generic mount options */
	char *fsname;		   /* source shown in /proc/mounts */
};

/* One layer: the upper (index 0, when present) or a lower. */
struct ovl_layer {
	char *path; /* absolute, as opened */
	int fd;	    /* O_PATH descriptor of the layer root */
	dev_t dev;
	uint8_t uuid[16]; /* filesystem UUID for origin file handles */
	bool has_uuid;
	bool is_upper;
	uint8_t fsid;	  /* xino: which filesystem, 0 for the upper's */
	bool fid_has_ino; /* file handles start with the 32-bit inode number */
	int handle_fd; /* else: a descriptor for open_by_handle_at(), or -1 */
	bool bare_ok;  /* noxattr.c may note its files */
};

/* Node flags. */
#define OVL_N_UPPER 0x01   /* has an upper entry */
#define OVL_N_OPAQUE 0x02  /* upper directory is opaque */
#define OVL_N_DELETED 0x04 /* unlinked or replaced; no longer hashed */
#define OVL_N_HASHED 0x08  /* reachable from the name hash */
#define OVL_N_IMPURE 0x10  /* upper dir may hold entries with an origin */
#define OVL_N_INDEX 0x20   /* lower name of a file in workdir/index */
#define OVL_N_LINKED 0x40  /* lower non-directory with more than one name */
#define OVL_N_NOXATTR 0x80 /* its lower file has no xattrs: see noxattr.c */
#define OVL_N_NOCAPS 0x100 /* created here, no security.capability since */
#define OVL_N_RA_SEEN 0x200   /* a name in it was looked up: readahead.c */
#define OVL_N_RA_QUEUED 0x400 /* listed ahead, or queued for it */
#define OVL_N_OPEN_ORPHAN 0x800 /* st_ino noted in fs->open_orphans */
/* Copied up since the kernel last asked for its birth time: inode.c. */
#define OVL_N_BTIME_STALE 0x1000

/*
 * A moved directory's path in the lower layers from one layer down: an
 * absolute path from the layer root, or a relative one, a new name in
 * the parent's directory. See redirect.c.
 */
struct ovl_redirect {
	struct ovl_redirect *next; /* for layers further down */
	int16_t layer;		   /* the first layer it applies to */
	bool relative;
	char path[];
};

/*
 * A node is one name of the merged tree that the kernel holds a
 * reference to. It is reached again by name from its parent, so no
 * descriptor is kept open for it: file descriptors are scarce.
 */
struct ovl_node {
	struct ovl_node *parent; /* holds a reference; NULL for the root */
	char *name;
	struct ovl_node *hash_next;
	struct ovl_node *all_next,
	    *all_prev;	  /* every live node, for teardown */
	uint64_t nlookup; /* kernel lookup count; under the hash shard lock */
	atomic_uint refs; /* children and open handles */
	pthread_mutex_t lock; /* copy-up and passthrough state */
	atomic_uint flags;    /* OVL_N_* */
	mode_t type;	      /* S_IFMT bits */
	ino_t ino;	      /* st_ino shown to users: the origin's if any */
	int16_t lower;	      /* topmost lower layer holding it, or -1 */
	int16_t lower_last;   /* for directories: last lower layer merged */
	int16_t data_layer;   /* metacopy: the layer of the data file */
	int backing_id;	      /* passthrough id, 0 when none */
	unsigned int backing_refs;
	bool backing_upper; /* backing file is the upper file */
	int anon_fd; /* a file with no name: O_TMPFILE or unlinked, or -1 */
	bool anon_lower; /* anon_fd is the lower file, opened before copy-up */
	int anon_meta_fd; /* with a lower anon_fd, the unlinked upper metacopy
			     file that holds the metadata, or -1 */
	struct ovl_file *files; /* open files, under lock */
	struct ovl_dir
	    *listing; /* merged listing without OPENDIR, under lock */
	struct ovl_redirect *redirect; /* a moved directory: see redirect.c */
	struct ovl_dirfds *_Atomic dirfds; /* see dirfd.c */
};

#define OVL_HASH_SHARDS 64

struct ovl_hash_shard {
	pthread_mutex_t lock;
	struct ovl_node **buckets;
	size_t nbuckets;
	size_t count;
};

#define OVL_ALL_SHARDS 16

/* A list of live nodes; the shard is chosen by the node's address. */
struct ovl_node_list {
	pthread_mutex_t lock;
	struct ovl_node *head;
};

struct ovl_fs {
	struct ovl_config config;
	struct ovl_layer *layers; /* [0] is the upper when upper != NULL */
	int nlayers;
	int first_lower; /* index of the topmost lower in layers */
	int first_data;	 /* index of the first data-only layer, or nlayers */
	int xino_shift;	 /* fsid goes in st_ino above this bit; 0: off */
	struct ovl_layer *upper;
	int upper_mnt_fd;   /* detached mount holding upperdir and workdir */
	int upper_lock_fd;  /* upperdir, flock-ed against a second mount */
	bool upper_busy;    /* another lamina mount holds that lock */
	bool upper_committing; /* the lock is a lamina commit's */
	/* Mount points of kernel overlay mounts that use upperdir or workdir
	 * as theirs, or NULL. The caller sets them, and teardown frees them. */
	char *upper_kernel_mount;
	char *work_kernel_mount;
	char *workdir_path; /* canonical */
	int workdir_fd;	    /* workdir itself, kept locked with flock */
	int work_fd;	    /* workdir/work: copy-up and whiteout staging */
	int index_fd;	    /* workdir/index with index=on, or -1 */
	pthread_mutex_t index_nlink_lock; /* overlay.nlink read and rewritten */
	pthread_mutex_t data_up_lock; /* metacopy data copy-up: metacopy.c */
	pthread_mutex_t xattr_up_lock; /* xattr change of a lower hard link */
	atomic_bool index_claimed; /* the upper root names its lowers */
	const char *xattr_prefix;  /* "trusted.overlay." or "user.overlay." */
	size_t xattr_prefix_len;
	bool rename_whiteout; /* upper fs supports RENAME_WHITEOUT */
	bool xwhiteouts;      /* whiteouts are xattr files: no mknod 0/0 */
	pthread_rwlock_t whiteout_lock; /* guards whiteout_fd and _name */
	int whiteout_fd;		/* shared whiteout, O_PATH, or -1 */
	char whiteout_name[64];		/* its name in work_fd */
	atomic_bool whiteout_unshared;	/* linking it failed: one per entry */
	struct ovl_node *root;
	struct ovl_hash_shard shards[OVL_HASH_SHARDS];
	struct ovl_node_list all[OVL_ALL_SHARDS];
	pthread_rwlock_t rename_lock; /* held for writing while names move */
	atomic_uint_fast64_t tmp_counter;
	atomic_bool passthrough_ok;
	struct fuse_session *se;
	double timeout; /* entry and attribute cache timeout, seconds */
	atomic_uint_fast64_t nodes; /* live nodes, for the memory figures */
	atomic_uint_fast64_t freed; /* nodes freed since memory was trimmed */
	bool check_only;    /* lamina check: set up, test, change nothing */
	bool upper_locked;  /* the caller holds upperdir's flock already */
	char work_name[64]; /* staging directory in workdir: "work" */
	bool dont_mask;	    /* the kernel leaves the umask to us */
	bool no_opendir;    /* the kernel opens directories without asking */
	struct ovl_prefetch *prefetch; /* see prefetch.c; NULL when off */
	struct ovl_readahead *readahead; /* see readahead.c; NULL when off */
	struct ovl_noxattr *noxattr; /* see noxattr.c; NULL without memory */
	atomic_int dirfd_count; /* descriptors kept by dirfd.c */
	atomic_uint renumbered; /* copy-ups that changed a file's st_ino */
	int dirfd_max;
	atomic_uint moves_started;  /* see moves.c */
	atomic_uint moves_finished; /* see moves.c */
	/* st_ino of the regular files that are open through a node whose
	 * name is gone while other names may be left: see node.c. */
	pthread_mutex_t open_orphans_lock;
	ino_t *open_orphans;
	size_t nopen_orphans, open_orphans_cap;
	atomic_size_t open_orphans_count; /* nopen_orphans, read unlocked */
};

/* An open regular file. */
struct ovl_file {
	int fd;
	struct ovl_node *node;
	struct ovl_file *next; /* in node->files */
	pthread_mutex_t lock;  /* swapping fd after a copy-up */
	bool lower;	       /* fd is the lower file */
	bool backing;	       /* counted in node->backing_refs */
	atomic_uint refs;      /* the kernel's handle, and ovl_node_open_file() */
};

/* A path inside one layer: a directory descriptor and a plain name. */
struct ovl_path {
	int dirfd;
	char name[256];
	/* When set, dirfd is pin's kept descriptor, held open by a
	 * reference on pin that ovl_path_close() drops. */
	struct ovl_node *pin;
	struct ovl_fs *fs;
};

#define OVL_PATH_MAX 4096
#define OVL_MAX_LAYERS 501 /* 500 lowers, as in overlayfs, and the upper */
/* overlayfs's redirect_max: no redirect written is longer. */
#define OVL_REDIRECT_MAX 256

/* ---- params.c ---- */
struct ovl_error {
	char msg[1024];
	/* lamina check: called for each error that setup gets past */
	void (*more)(void *arg, const char *msg);
	void *arg;
	int count;
};
int ovl_error_continue(struct ovl_error *e, int err);
int ovl_parse_options(struct ovl_config *cfg, const char *opts,
		      struct ovl_error *e);
int ovl_config_finish(struct ovl_config *cfg, struct ovl_error *e);
/* Split s at the first sep that no backslash escapes. Returns the rest,
 * or NULL when there is no such sep. */
char *ovl_split_unescaped(char *s, char sep);
/* Remove in place the backslashes that escape the next character. */
void ovl_unescape(char *s);
void ovl_config_free(struct ovl_config *cfg);
void ovl_error_set(struct ovl_error *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- overlap.c: overlap checks between layer directories ---- */
/* Whether path is dir or lies below it; both are real paths. */
bool ovl_path_within(const char *path, const char *dir);
/* Reject an upper, workdir or lower that is the same directory as
 * another of them or lies inside another. upper and work may be NULL, and
 * so may a lower that failed to open. */
int ovl_check_layers_apart(const char *upper, const char *work,
			   const char *const *lowers, int nlower,
			   struct ovl_error *e);
/* Reject a lower given twice, as overlayfs does. A NULL lower is
 * skipped. */
int ovl_check_lowers_distinct(const char *const *lowers, int nlower,
			      struct ovl_error *e);

/* ---- super.c ---- */
int ovl_fs_setup(struct ovl_fs *fs, struct ovl_error *e);
void ovl_fs_teardown(struct ovl_fs *fs);
/*
 * Write into buf the fix for err from creating an entry on the upper's
 * filesystem: "; " and advice for ENOSPC and EDQUOT, "" for any other
 * error. Returns whether there was advice.
 */
bool ovl_space_advice(struct ovl_fs *fs, int err, char *buf, size_t size);
/* Return the mount point of the kernel overlay mount that uses the upper,
 * or NULL when none does or when the error about its workdir names it. */
const char *ovl_upper_kernel_mount(const struct ovl_fs *fs);

/* ---- check.c: findings beyond the errors that stop a mount ---- */
enum ovl_check_level { OVL_CHECK_INFO, OVL_CHECK_WARN };
typedef void (*ovl_check_fn)(void *arg, enum ovl_check_level level,
			     const char *msg);
int ovl_check_report(struct ovl_fs *fs, ovl_check_fn report, void *arg);

/* ---- util.c: system calls on a layer ---- */
int ovl_open_layer_dir(int layer_fd, const char *relpath, int flags);
DIR *ovl_opendir_at(int dirfd);
int ovl_reopen_dir(int dirfd, int flags);
int ovl_flock_wait(int fd, int wait_ms);
bool ovl_commit_marked(int fd);
int ovl_do_fstatat(int dirfd, const char *name, struct stat *st);
int ovl_do_getxattr(int dirfd, const char *name, const char *attr, void *buf,
		    size_t size);
int ovl_do_setxattr(int dirfd, const char *name, const char *attr,
		    const void *buf, size_t size, int flags);
int ovl_do_removexattr(int dirfd, const char *name, const char *attr);
int ovl_do_listxattr(int dirfd, const char *name, char *buf, size_t size);
int ovl_do_rename(int olddir, const char *oldname, int newdir,
		  const char *newname, unsigned int flags);
int ovl_remove_tree(int dirfd, const char *name);
void ovl_tmpname(struct ovl_fs *fs, char *buf, size_t size);
bool ovl_is_whiteout(const struct stat *st);
void ovl_xattr_name(const struct ovl_fs *fs, char *buf, size_t size,
		    const char *suffix);
bool ovl_check_opaque(struct ovl_fs *fs, int dirfd, const char *name);
bool ovl_has_origin(struct ovl_fs *fs, int dirfd, const char *name);
int ovl_set_impure(struct ovl_fs *fs, int dirfd);
bool ovl_check_xwhiteout_dir(struct ovl_fs *fs, int dirfd, const char *name);
bool ovl_check_xwhiteout(struct ovl_fs *fs, int dirfd, const char *name,
			 const struct stat *st);

/* ---- node.c ---- */
int ovl_nodes_init(struct ovl_fs *fs);
void ovl_nodes_destroy(struct ovl_fs *fs);
struct ovl_node *ovl_node_from_id(struct ovl_fs *fs, uint64_t nodeid);
uint64_t ovl_node_id(struct ovl_fs *fs, struct ovl_node *node);
struct ovl_node *ovl_node_new(struct ovl_fs *fs, struct ovl_node *parent,
			      const char *name);
struct ovl_node *ovl_node_find(struct ovl_fs *fs, struct ovl_node *parent,
			       const char *name);
struct ovl_node *ovl_node_peek(struct ovl_fs *fs, struct ovl_node *parent,
			       const char *name);
struct ovl_node *ovl_node_insert(struct ovl_fs *fs, struct ovl_node *node);
void ovl_node_unhash(struct ovl_fs *fs, struct ovl_node *node);
void ovl_node_unhash_keep(struct ovl_fs *fs, struct ovl_node *node);
struct ovl_rename_redirects {
	const char *old; /* new redirect of the entry at the old name */
	const char *new; /* with exchange: of the entry at the new name */
};
int ovl_node_rename(struct ovl_fs *fs, struct ovl_node *oldparent,
		    const char *oldname, struct ovl_node *newparent,
		    const char *newname, bool exchange,
		    const struct ovl_rename_redirects *redirects);
void ovl_node_get(struct ovl_node *node);
void ovl_node_name_copy(struct ovl_fs *fs, struct ovl_node *node, char *buf,
			size_t size);
const char *ovl_node_name_try_copy(struct ovl_fs *fs, struct ovl_node *node,
				   char *buf, size_t size);
void ovl_node_detach(struct ovl_fs *fs, struct ovl_node *node, int meta_fd);
void ovl_node_orphan_note(struct ovl_fs *fs, struct ovl_node *node);
bool ovl_node_ino_orphaned(struct ovl_fs *fs, ino_t ino);
void ovl_node_put(struct ovl_fs *fs, struct ovl_node *node);
void ovl_node_forget(struct ovl_fs *fs, struct ovl_node *node,
		     uint64_t nlookup);
int ovl_node_path(struct ovl_fs *fs, struct ovl_node *node, char *buf,
		  size_t size);
int ovl_node_lower_path(struct ovl_fs *fs, struct ovl_node *node, int layer,
			char *buf, size_t size);

/* ---- index.c ---- */
int ovl_index_setup(struct ovl_fs *fs, struct ovl_error *e);
int ovl_index_claim_upper(struct ovl_fs *fs);
void ovl_index_drop_orphan(struct ovl_fs *fs, const struct ovl_path *lower);
bool ovl_is_hard_link(const struct stat *st);
bool ovl_index_wanted(struct ovl_fs *fs, const struct stat *st);
int ovl_index_find(struct ovl_fs *fs, const struct ovl_path *lower,
		   struct ovl_path *path, struct stat *st);
void ovl_index_refresh(struct ovl_fs *fs, struct ovl_node *node);
int ovl_index_open(struct ovl_fs *fs, struct ovl_node *node,
		   struct ovl_path *path);
int ovl_index_set_nlink(struct ovl_fs *fs, int dirfd, const char *name,
			char base, long delta);
long ovl_index_count(struct ovl_fs *fs, int dirfd, const char *name,
		     nlink_t links, nlink_t lower_links, long fallback);
int ovl_index_nlink_lower(struct ovl_fs *fs, int dirfd, const char *name,
			  nlink_t lower_links);
int ovl_index_nlink_upper(struct ovl_fs *fs, int dirfd, const char *name);
void ovl_index_fix_nlink(struct ovl_fs *fs, const struct ovl_path *path,
			 struct stat *st, bool entry);
void ovl_index_fix_nlink_fd(struct ovl_fs *fs, int fd, bool lower,
			    struct stat *st);

/* ---- metacopy.c ---- */
bool ovl_has_metacopy(struct ovl_fs *fs, int dirfd, const char *name);
bool ovl_metacopy_pending(struct ovl_fs *fs, struct ovl_node *node);
int ovl_metacopy_bring_up(struct ovl_fs *fs, struct ovl_node *node,
			  unsigned int flags);
int ovl_metacopy_check(struct ovl_fs *fs, int dirfd, const char *name,
		       const struct stat *st);
int ovl_metacopy_finish(struct ovl_fs *fs, struct ovl_node *node,
			unsigned int flags);
void ovl_metacopy_fix_blocks(struct ovl_fs *fs, struct ovl_node *node,
			     struct stat *st);
int ovl_node_data_layer(const struct ovl_node *node);

/* ---- redirect_walk.c ---- */
struct ovl_lookup;
int ovl_redirect_walk(struct ovl_fs *fs, struct ovl_lookup *res, int layer,
		      const char *path, const char **base);

/* ---- redirect.c ---- */
int ovl_redirect_read(struct ovl_fs *fs, int dirfd, const char *name,
		      char *value, size_t size);
bool ovl_redirect_valid(const char *value);
const struct ovl_redirect *ovl_redirect_at(const struct ovl_redirect *r,
					   int layer);
int ovl_redirect_add(struct ovl_redirect **list, int layer, const char *path,
		     bool relative);
int ovl_redirect_set_top(struct ovl_redirect **list, int layer,
			 const char *path);
void ovl_redirect_free(struct ovl_redirect *r);
static inline bool ovl_node_has(const struct ovl_node *n, unsigned int f)
{
	return atomic_load(&n->flags) & f;
}
static inline bool ovl_node_is_dir(const struct ovl_node *n)
{
	return S_ISDIR(n->type);
}
/* A directory with at least one lower layer under it. */
static inline bool ovl_node_is_merged_or_lower(const struct ovl_node *n)
{
	return n->lower >= 0;
}

/* ---- lookup.c ---- */
/* Result of looking up one name in all layers. */
struct ovl_lookup {
	struct stat st; /* attributes of the real file, st_ino fixed up */
	int layer;	/* layer index the attributes come from */
	int16_t lower;	/* topmost lower holding the name, or -1 */
	int16_t lower_last;
	int16_t data_layer; /* metacopy: the layer of the data file */
	bool metacopy;	    /* a metacopy file was found */
	bool stop_below;    /* an opaque directory on an absolute path */
	bool upper;
	bool opaque;
	bool upper_whiteout; /* the upper contains a whiteout at the name */
	bool noxattr; /* the lower file of st has no xattrs: see noxattr.c */
	char redirect[OVL_PATH_MAX]; /* top lower path of a moved dir, or "" */
	struct ovl_redirect *chain;  /* every redirect met; see redirect.c */
};
void ovl_lookup_release(struct ovl_lookup *res);
int ovl_lookup_name(struct ovl_fs *fs, struct ovl_node *parent,
		    const char *name, struct ovl_lookup *res);
int ovl_lookup_node(struct ovl_fs *fs, struct ovl_node *parent,
		    const char *name, struct ovl_node **out, struct stat *st);
int ovl_node_stat(struct ovl_fs *fs, struct ovl_node *node, struct stat *st);
void ovl_node_fill(struct ovl_node *node, struct ovl_lookup *res);
void ovl_node_fix_stat(const struct ovl_node *node, struct stat *st);
int ovl_lower_positive(struct ovl_fs *fs, struct ovl_node *parent,
		       const char *name);
int ovl_origin_stat(struct ovl_fs *fs, int dirfd, const char *name,
		    struct stat *st);
ino_t ovl_origin_ino(struct ovl_fs *fs, int dirfd, const char *name,
		     ino_t fallback);
ino_t ovl_upper_file_ino(struct ovl_fs *fs, int dirfd, const char *name,
			 const struct stat *st);
ino_t ovl_xino(struct ovl_fs *fs, int layer, ino_t ino);

/* ---- path.c: where a node lives in each layer ---- */
int ovl_node_open_parent(struct ovl_fs *fs, struct ovl_node *node, int layer,
			 struct ovl_path *path);
int ovl_node_open_dir(struct ovl_fs *fs, struct ovl_node *node, int layer,
		      int flags);
int ovl_node_dir_fd(struct ovl_fs *fs, struct ovl_node *node, int layer,
		    bool *owned);
int ovl_node_real_layer(const struct ovl_node *node);
int ovl_node_open_self(struct ovl_fs *fs, struct ovl_node *node,
		       struct ovl_path *path, int *fd);
int ovl_node_open_place(struct ovl_fs *fs, struct ovl_node *node, int layer,
			struct ovl_path *path);
void ovl_path_close(struct ovl_path *path);

/* ---- moves.c: directory renames and removals in flight ---- */
void ovl_moves_begin(struct ovl_fs *fs);
void ovl_moves_end(struct ovl_fs *fs);
bool ovl_moves_settle(struct ovl_fs *fs, unsigned int *seen);
bool ovl_moves_none_since(struct ovl_fs *fs, unsigned int seen);
bool ovl_moves_read_again(struct ovl_fs *fs, bool settled, unsigned int seen,
			  int *tries);

/* ---- dirfd.c: kept descriptors of directory nodes ---- */
void ovl_dirfd_init(struct ovl_fs *fs);
bool ovl_dirfd_open(struct ovl_fs *fs, struct ovl_node *node, int layer,
		    int flags, int *out);
bool ovl_dirfd_get(struct ovl_fs *fs, struct ovl_node *node, int layer,
		   int *out, bool *owned);
bool ovl_dirfd_open_place(struct ovl_fs *fs, struct ovl_node *node,
			  int layer, struct ovl_path *path, int *err);
void ovl_dirfd_free(struct ovl_fs *fs, struct ovl_node *node);

/* ---- dircache.c: directory descriptors reused within one listing ---- */
void ovl_dircache_begin(struct ovl_fs *fs);
void ovl_dircache_end(void);
int ovl_dircache_get(const struct ovl_node *node, int layer, int flags);
void ovl_dircache_put(struct ovl_node *node, int layer, int flags, int fd);

/* ---- setid.c: set-ID bits cleared for the kernel ---- */
int ovl_kill_suidgid(int fd, int dirfd, const char *name,
		     const struct fuse_ctx *ctx);

/* ---- noxattr.c: lower files known to have no xattrs ---- */
struct ovl_noxattr;
void ovl_noxattr_probe(struct ovl_fs *fs);
int ovl_noxattr_init(struct ovl_fs *fs);
void ovl_noxattr_free(struct ovl_fs *fs);
void ovl_noxattr_note(struct ovl_fs *fs, int layer, const struct stat *st);
bool ovl_noxattr_known(const struct ovl_fs *fs, int layer,
		       const struct stat *st);
bool ovl_noxattr_learn(struct ovl_fs *fs, int layer, int dirfd,
		       const char *name, const struct stat *st);
bool ovl_noxattr_name(const char *name);

/* ---- prefetch.c: lower directories read ahead of the requests ---- */
struct ovl_prefetch;
int ovl_prefetch_start(struct ovl_fs *fs);
void ovl_prefetch_stop(struct ovl_fs *fs);
void ovl_prefetch_begin(void);
void ovl_prefetch_end(struct ovl_fs *fs);
void ovl_prefetch_dir(struct ovl_fs *fs, struct ovl_node *node);

/* ---- mount_watch.c: wait for the last mount of a superblock to go ---- */
struct ovl_mount_watch {
	dev_t dev;
	void (*gone)(void *arg);
	void *arg;
	int table_fd; /* /proc/self/mountinfo, for poll() */
	int wake_fd;  /* an eventfd that stops the thread */
	pthread_t thread;
};
int ovl_mount_watch_start(struct ovl_mount_watch *w, dev_t dev,
			  void (*gone)(void *arg), void *arg);
void ovl_mount_watch_stop(struct ovl_mount_watch *w);

/* ---- readahead.c: directories listed through the mount ---- */
struct ovl_readahead;
void ovl_readahead_probe(struct ovl_fs *fs);
void ovl_readahead_start(struct ovl_fs *fs);
void ovl_readahead_stop(struct ovl_fs *fs);
void ovl_readahead_note(struct ovl_fs *fs, struct ovl_node *dir, uint32_t pid);
bool ovl_readahead_is_reader(struct ovl_fs *fs, uint32_t pid);
void ovl_readahead_reap(struct ovl_fs *fs);

/* ---- readahead_child.c: the process that lists them ---- */
/* Its argv[0], its threads at most, and its two descriptors: the private
 * copy of the mount, and the socket that brings one path per message. */
#define OVL_READAHEAD_CHILD "lamina-readdir"
#define OVL_READAHEAD_THREADS 8
#define OVL_READAHEAD_COPY_FD 3
#define OVL_READAHEAD_SOCK_FD 4
int ovl_readahead_child(void);

/* ---- copy_up.c ---- */
#define OVL_COPY_UP_NO_DATA 0x1 /* the data is about to be truncated */
#define OVL_COPY_UP_META 0x2	/* metadata is enough (with metacopy=on) */
int ovl_copy_up(struct ovl_fs *fs, struct ovl_node *node, unsigned int flags);
struct ovl_lookup;
int ovl_copy_up_name(struct ovl_fs *fs, struct ovl_node *parent,
		     const char *name, struct ovl_lookup *res,
		     unsigned int flags);
int ovl_copy_up_data(int src, int dst, off_t size);
int ovl_copy_xattrs(struct ovl_fs *fs, struct ovl_path *src,
		    struct ovl_path *dst);
#define OVL_FH_MAX 255
int ovl_encode_fh(struct ovl_fs *fs, int dirfd, const char *name, uint8_t *fb,
		  bool upper);
int ovl_set_origin(struct ovl_fs *fs, struct ovl_path *lower,
		   struct ovl_path *upper);

/* ---- whiteout.c ---- */
int ovl_whiteout_create(struct ovl_fs *fs, int dirfd, const char *name);
int ovl_whiteout_replace(struct ovl_fs *fs, int dirfd, const char *name);
int ovl_whiteout_mark_dir(struct ovl_fs *fs, int dirfd);
void ovl_whiteout_init(struct ovl_fs *fs);
void ovl_whiteout_destroy(struct ovl_fs *fs);
bool ovl_upper_is_whiteout(struct ovl_fs *fs, int dirfd, const char *name,
			   const struct stat *st);
int ovl_set_opaque(struct ovl_fs *fs, int dirfd, const char *name);

/* ---- readdir.c ---- */
struct ovl_dirent {
	char *name;
	ino_t ino;
	unsigned char type; /* DT_* */
};
struct ovl_dir {
	pthread_mutex_t lock;
	atomic_uint refs;
	struct ovl_dirent *entries;
	size_t count;
	size_t cap;
	unsigned int renumbered; /* fs->renumbered when loaded */
	bool loaded;
};
int ovl_dir_load(struct ovl_fs *fs, struct ovl_node *node, struct ovl_dir *dir,
		 bool keep_atime);
void ovl_dir_clear(struct ovl_dir *dir);
struct ovl_dir *ovl_dir_new(void);
void ovl_dir_put(struct ovl_dir *dir);
int ovl_dir_is_empty(struct ovl_fs *fs, struct ovl_node *node);

/* ---- ops.c: the FUSE operation table ---- */
extern const struct fuse_ops ovl_fuse_ops;

#endif

/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Definitions that the system's <linux/fuse.h> lacks when it is older
 * than protocol 7.45 (Debian 12 ships 7.38). Values are those of the
 * kernel's include/uapi/linux/fuse.h at 7.45; a newer header wins.
 */
#ifndef LAMINA_FUSE_COMPAT_H
#define LAMINA_FUSE_COMPAT_H

#include <linux/fuse.h>
#include <stdint.h>
#include <sys/ioctl.h>

#ifndef FUSE_PASSTHROUGH
#define FUSE_DIRECT_IO_ALLOW_MMAP (1ULL << 36)
#define FUSE_PASSTHROUGH (1ULL << 37)
#define FUSE_NO_EXPORT_SUPPORT (1ULL << 38)
#define FUSE_HAS_RESEND (1ULL << 39)
#endif

#ifndef FOPEN_PASSTHROUGH
#define FOPEN_PASSTHROUGH (1 << 7)
#endif

#ifndef FUSE_OVER_IO_URING
#define FUSE_OVER_IO_URING (1ULL << 41)
#endif

#ifndef FUSE_DEV_IOC_BACKING_OPEN
struct fuse_backing_map {
	int32_t fd;
	uint32_t flags;
	uint64_t padding;
};
#define FUSE_DEV_IOC_BACKING_OPEN _IOW(229, 1, struct fuse_backing_map)
#define FUSE_DEV_IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)
#endif

#ifndef FUSE_DEV_IOC_CLONE
#define FUSE_DEV_IOC_CLONE _IOR(229, 0, uint32_t)
#endif

/* FUSE_STATX (7.39): attributes with the birth time, as statx(2) has them.
 * The structures carry lamina_ names so that a newer header cannot clash. */
#ifndef FUSE_STATX
#define FUSE_STATX 52
#endif

struct lamina_fuse_sx_time {
	int64_t tv_sec;
	uint32_t tv_nsec;
	int32_t reserved;
};

struct lamina_fuse_statx {
	uint32_t mask;
	uint32_t blksize;
	uint64_t attributes;
	uint32_t nlink;
	uint32_t uid;
	uint32_t gid;
	uint16_t mode;
	uint16_t spare0[1];
	uint64_t ino;
	uint64_t size;
	uint64_t blocks;
	uint64_t attributes_mask;
	struct lamina_fuse_sx_time atime;
	struct lamina_fuse_sx_time btime;
	struct lamina_fuse_sx_time ctime;
	struct lamina_fuse_sx_time mtime;
	uint32_t rdev_major;
	uint32_t rdev_minor;
	uint32_t dev_major;
	uint32_t dev_minor;
	uint64_t spare2[14];
};

struct lamina_fuse_statx_in {
	uint32_t getattr_flags;
	uint32_t reserved;
	uint64_t fh;
	uint32_t sx_flags;
	uint32_t sx_mask;
};

struct lamina_fuse_statx_out {
	uint64_t attr_valid;
	uint32_t attr_valid_nsec;
	uint32_t flags;
	uint64_t spare[2];
	struct lamina_fuse_statx stat;
};

/* The 7.45 layout of the INIT reply; 7.38 calls max_stack_depth unused. */
struct lamina_fuse_init_out {
	uint32_t major;
	uint32_t minor;
	uint32_t max_readahead;
	uint32_t flags;
	uint16_t max_background;
	uint16_t congestion_threshold;
	uint32_t max_write;
	uint32_t time_gran;
	uint16_t max_pages;
	uint16_t map_alignment;
	uint32_t flags2;
	uint32_t max_stack_depth;
	uint16_t request_timeout;
	uint16_t unused[11];
};

/* The 7.40 layout of the OPEN and CREATE reply. */
struct lamina_fuse_open_out {
	uint64_t fh;
	uint32_t open_flags;
	int32_t backing_id;
};

#endif

// SPDX-License-Identifier: GPL-2.0-or-later
/* FUSE passthrough: registering backing files with the kernel. */
#include "internal.h"
#include "../common/log.h"

#include <errno.h>
#include <string.h>

/*
 * Register fd as a backing file. Returns the positive backing id that
 * an OPEN reply may carry, or -errno (EPERM without CAP_SYS_ADMIN,
 * ELOOP when the file sits on a stacked filesystem that is too deep).
 */
int fuse_backing_open(struct fuse_session *se, int fd)
{
	struct fuse_backing_map map = {.fd = fd};
	int id;

	if (!(se->conn.want_flags & FUSE_PASSTHROUGH))
		return -EOPNOTSUPP;
	id = ioctl(se->fd, FUSE_DEV_IOC_BACKING_OPEN, &map);
	if (id < 0)
		return -errno;
	if (id == 0)
		return -EIO;
	return id;
}

void fuse_backing_close(struct fuse_session *se, int backing_id)
{
	uint32_t id = backing_id;

	if (ioctl(se->fd, FUSE_DEV_IOC_BACKING_CLOSE, &id) < 0)
		log_warn_rl("closing passthrough backing id %d failed: %s",
			    backing_id, strerror(errno));
}

bool fuse_session_passthrough(const struct fuse_session *se)
{
	return se->conn.want_flags & FUSE_PASSTHROUGH;
}

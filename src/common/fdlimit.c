// SPDX-License-Identifier: GPL-2.0-or-later
#include "fdlimit.h"

#include <errno.h>
#include <stddef.h>

int fdlimit_raise(struct rlimit *rl)
{
	struct rlimit current;
	int err = 0;

	if (getrlimit(RLIMIT_NOFILE, &current) < 0)
		return -errno;
	if (current.rlim_cur < current.rlim_max) {
		struct rlimit raised = {current.rlim_max, current.rlim_max};

		if (setrlimit(RLIMIT_NOFILE, &raised) < 0)
			err = -errno;
		else
			current = raised;
	}
	if (rl)
		*rl = current;
	return err;
}
